import { parseQuantity } from './quantity.ts';

test.each([
  ['1Gi', 2 ** 30],
  ['256Mi', 256 * 2 ** 20],
  ['1.5Ki', 1536],
  ['500M', 5e8],
  ['7G', 7e9],
  ['4096', 4096],
  ['0', 0],
])('%s is %d bytes', (text, bytes) => {
  expect(parseQuantity(text)).toBe(bytes);
});

test.each(['', 'big', '1GB', '-1Gi', '1e3', '1 Gi', '1gi'])('%j is not a quantity', (text) => {
  expect(parseQuantity(text)).toBeUndefined();
});
