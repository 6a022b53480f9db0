// Three suites: unit tests of pure code beside the sources, integration
// tests that start real engine processes, real NBD clients and real TCP links,
// and e2e tests against a real Kubernetes control plane.
const swc = ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2023' }, module: { type: 'es6' } }];
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': swc },
  testEnvironment: 'node',
};
export default {
  projects: [
    {
      ...common,
      displayName: 'unit',
      // Pure code: the product (src) and the image recipe (scripts/image).
      roots: ['<rootDir>/src', '<rootDir>/scripts'],
      testMatch: ['<rootDir>/src/**/*.test.ts', '<rootDir>/scripts/**/*.test.ts'],
    },
    // Seeded simulations of the real controller and agents on a simulated API server (test/sim/control).
    {
      ...common,
      displayName: 'control-sim',
      roots: ['<rootDir>/test/sim/control'],
      testMatch: ['<rootDir>/test/sim/control/**/*.test.ts'],
    },
    // The engine simulator's fixed budget: two real engines, simulated disks and network (src/sim).
    {
      ...common,
      displayName: 'engine-sim',
      roots: ['<rootDir>/test/sim/engine'],
      testMatch: ['<rootDir>/test/sim/engine/**/*.test.ts'],
      slowTestThreshold: 120,
    },
    {
      ...common,
      displayName: 'integration',
      roots: ['<rootDir>/test/integration'],
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      slowTestThreshold: 60,
    },
    // e2e: a real kube-apiserver, etcd and kube-controller-manager with simulated nodes
    // (test/e2e/harness), started once per run by globalSetup. Run with --runInBand.
    {
      ...common,
      displayName: 'e2e',
      roots: ['<rootDir>/test/e2e'],
      testMatch: ['<rootDir>/test/e2e/**/*.test.ts'],
      globalSetup: '<rootDir>/test/e2e/global-setup.ts',
      globalTeardown: '<rootDir>/test/e2e/global-teardown.ts',
      slowTestThreshold: 60,
    },
  ],
};
