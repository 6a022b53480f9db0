export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  settled: boolean;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const d: Deferred<T> = {
    promise: undefined as unknown as Promise<T>,
    resolve: undefined as unknown as (v: T) => void,
    settled: false,
  };
  d.promise = new Promise<T>((r) => {
    resolve = r;
  });
  d.resolve = (v: T): void => {
    if (!d.settled) {
      d.settled = true;
      resolve(v);
    }
  };
  return d;
}
