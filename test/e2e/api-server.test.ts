// The API server behaviour tandem's operator relies on, shown against the real
// kube-apiserver: CRD validation with the server's own messages, the status
// subresource and generation, server-side apply between two field managers.
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { kubernetesVersion, repoRoot } from './harness/paths.ts';
import { expectApiError, external, kubectl, useCluster } from './lib/cluster.ts';
import { currentCondition, eventuallyCondition } from './lib/eventually.ts';

const group = 'e2e.tandem.dev';
const version = 'v1alpha1';
const plural = 'widgets';
const apiVersion = `${group}/${version}`;
const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

type Widget = k8s.KubernetesObject & {
  spec: { replicas?: number; protocol?: string; size?: string };
  status?: {
    observedGeneration?: number;
    conditions?: { type: string; status: string; reason?: string; observedGeneration?: number }[];
  };
};

const cluster = useCluster();
const ns = cluster.namespacePerTest();

beforeAll(async () => {
  await kubectl(['apply', '--server-side', '-f', join(repoRoot, 'test/e2e/fixtures/widget-crd.yaml')]);
  await kubectl(['wait', '--for=condition=Established', '--timeout=60s', `crd/${plural}.${group}`]);
}, 90_000);

// On someone's own cluster (external mode) the test CRD must not stay behind.
afterAll(async () => {
  await kubectl(['delete', '--ignore-not-found', '--timeout=60s', `crd/${plural}.${group}`]);
}, 90_000);

const widgetApi = () => ({ group, version, plural, namespace: ns.name });
const createWidget = (name: string, spec: Widget['spec']) =>
  cluster.custom.createNamespacedCustomObject({
    ...widgetApi(),
    body: { apiVersion, kind: 'Widget', metadata: { name }, spec },
  }) as Promise<Widget>;
const getWidget = (name: string) =>
  cluster.custom.getNamespacedCustomObject({ ...widgetApi(), name }) as Promise<Widget>;

test('the API server reports the version it was built as', async () => {
  const info = await cluster.kc.makeApiClient(k8s.VersionApi).getCode();
  if (external) expect(info.gitVersion).toMatch(/^v1\.\d+\./);
  else expect(info.gitVersion).toBe(kubernetesVersion);
});

describe('a CRD with a structural schema', () => {
  test('accepts a valid object and applies the schema defaults', async () => {
    const w = await createWidget('good', { replicas: 2, size: '1Gi' });
    expect(w.spec).toEqual({ replicas: 2, size: '1Gi', protocol: 'C' });
    expect(w.metadata?.generation).toBe(1);
  });

  test('rejects an invalid object with the API server validation message', async () => {
    const err = await expectApiError(createWidget('bad', { replicas: 9, protocol: 'D', size: 'big' }));
    expect(err.code).toBe(422);
    expect(err.reason).toBe('Invalid');
    expect(err.message).toContain('Widget.e2e.tandem.dev "bad" is invalid');
    expect(err.message).toContain(
      'spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 3',
    );
    expect(err.message).toContain('spec.protocol: Unsupported value: "D": supported values: "A", "B", "C"');
    expect(err.message).toContain(
      'spec.size: Invalid value: "big": spec.size in body should match \'^[0-9]+(Ki|Mi|Gi)$\'',
    );

    const missing = await expectApiError(createWidget('empty', {}));
    expect(missing.code).toBe(422);
    expect(missing.message).toContain('spec.replicas: Required value');
  });
});

describe('the status subresource', () => {
  test('keeps status out of spec writes and spec out of status writes; generation follows spec only', async () => {
    await createWidget('w', { replicas: 1 });
    // A write to the main resource cannot set status...
    const afterSpecWrite = (await cluster.custom.patchNamespacedCustomObject(
      { ...widgetApi(), name: 'w', body: { spec: { replicas: 2 }, status: { observedGeneration: 99 } } },
      mergePatch,
    )) as Widget;
    expect(afterSpecWrite.status).toBeUndefined();
    expect(afterSpecWrite.metadata?.generation).toBe(2);
    // ...and a write to /status cannot change spec, nor bump the generation.
    const afterStatusWrite = (await cluster.custom.patchNamespacedCustomObjectStatus(
      {
        ...widgetApi(),
        name: 'w',
        body: {
          spec: { replicas: 3 },
          status: {
            observedGeneration: 2,
            conditions: [{ type: 'Ready', status: 'True', reason: 'Reconciled', observedGeneration: 2 }],
          },
        },
      },
      mergePatch,
    )) as Widget;
    expect(afterStatusWrite.spec.replicas).toBe(2);
    expect(afterStatusWrite.metadata?.generation).toBe(2);
    expect(currentCondition(afterStatusWrite, 'Ready').status).toBe('True');
  });

  test('eventuallyCondition trusts a condition only once it describes the current generation', async () => {
    await createWidget('w', { replicas: 1 });
    const writeStatus = (generation: number, status: string) =>
      cluster.custom.patchNamespacedCustomObjectStatus(
        {
          ...widgetApi(),
          name: 'w',
          body: {
            status: {
              observedGeneration: generation,
              conditions: [{ type: 'Ready', status, reason: 'Test', observedGeneration: generation }],
            },
          },
        },
        mergePatch,
      );
    await writeStatus(1, 'True');
    await cluster.custom.patchNamespacedCustomObject(
      { ...widgetApi(), name: 'w', body: { spec: { replicas: 3 } } },
      mergePatch,
    );
    // Ready=True is still there, but for generation 1: not an answer about generation 2.
    const stale = await getWidget('w');
    expect(stale.metadata?.generation).toBe(2);
    expect(() => currentCondition(stale, 'Ready')).toThrow('is for generation 1, object is at 2');
    // A "controller" catches up later; the helper waits for it.
    setTimeout(() => void writeStatus(2, 'False'), 500);
    const fresh = await eventuallyCondition(() => getWidget('w'), 'Ready', 'False', { timeoutMs: 10_000 });
    expect(fresh.status?.observedGeneration).toBe(2);
  });
});

describe('server-side apply', () => {
  const apply = (manager: string, spec: Widget['spec'], force = false) =>
    cluster.objects.patch<Widget>(
      { apiVersion, kind: 'Widget', metadata: { name: 'shared', namespace: ns.name }, spec },
      undefined,
      undefined,
      manager,
      force,
      k8s.PatchStrategy.ServerSideApply,
    );

  test('two field managers own their own fields of one object; a conflict is refused unless forced', async () => {
    await apply('tandem-controller', { replicas: 2 });
    const both = await apply('tandem-operator-user', { replicas: 2, size: '2Gi' });
    expect(both.spec).toMatchObject({ replicas: 2, size: '2Gi' });
    const owners = (both.metadata?.managedFields ?? []).filter((f) => f.operation === 'Apply').map((f) => f.manager);
    expect(owners.sort()).toEqual(['tandem-controller', 'tandem-operator-user']);

    // Applying a different value for a field another manager owns is a conflict...
    const conflict = await expectApiError(apply('tandem-operator-user', { replicas: 3, size: '2Gi' }));
    expect(conflict.code).toBe(409);
    expect(conflict.message).toContain('conflict with "tandem-controller"');
    expect(conflict.message).toContain('.spec.replicas');

    // ...unless forced, which moves the field to the new manager.
    const forced = await apply('tandem-operator-user', { replicas: 3, size: '2Gi' }, true);
    expect(forced.spec.replicas).toBe(3);
    const controllerFields = JSON.stringify(
      forced.metadata?.managedFields?.find((f) => f.manager === 'tandem-controller')?.fieldsV1 ?? {},
    );
    expect(controllerFields).not.toContain('f:replicas');

    // A manager that drops a field from its apply gives it up; nobody else owns size, so it goes.
    const dropped = await apply('tandem-operator-user', { replicas: 3 });
    expect(dropped.spec.size).toBeUndefined();
  });
});
