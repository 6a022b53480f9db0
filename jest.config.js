// Two suites: unit tests of pure code beside the sources, and integration
// tests that start real engine processes, real NBD clients and real TCP links.
const swc = ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2023' }, module: { type: 'es6' } }];
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': swc },
  testEnvironment: 'node',
};
export default {
  projects: [
    { ...common, displayName: 'unit', roots: ['<rootDir>/src'], testMatch: ['<rootDir>/src/**/*.test.ts'] },
    { ...common, displayName: 'integration', roots: ['<rootDir>/test/integration'], testMatch: ['<rootDir>/test/integration/**/*.test.ts'], slowTestThreshold: 60 },
  ],
};
