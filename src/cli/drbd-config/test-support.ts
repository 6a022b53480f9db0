// Shared by the parser's tests: run something that must throw a ConfigError.
import { ConfigError } from './config-error.ts';

export function configErrorOf(run: () => unknown): ConfigError {
  try {
    run();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}
