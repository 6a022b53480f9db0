// Every e2e suite that runs volumes watches their roles: the volumes and replicas
// of the suite's namespace, every version, put in commit order (resourceVersion:
// the etcd revision of one API server) and fed to the role audit the simulator
// uses (test/lib/role-audit.ts). check() runs the audit over what arrived since
// the last check; a suite calls it after each test and fails the test on any role
// change without a cause.
//
//   const roles = watchRoles(ns);     // in the describe body: stops in afterAll
//   await roles.start();              // in beforeAll, once the chart (the CRDs) is installed
//   afterEach(() => roles.check());   // throws with every violation and the changes seen
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { type AuditObject, RoleAudit } from '../../lib/role-audit.ts';
import { kubeconfigPath } from './cluster.ts';
import { ResumableWatch } from './watch.ts';

type Arrived = { kind: 'rv' | 'rvr'; type: string; obj: AuditObject & { metadata: { resourceVersion?: string } } };

export class RoleWatch {
  readonly audit: RoleAudit;
  readonly #lines: string[] = [];
  readonly #watches: ResumableWatch[] = [];
  #pending: Arrived[] = [];
  readonly #last = new Map<string, AuditObject>();
  readonly #seen = new Set<string>();
  readonly #ns: string;

  constructor(ns: string) {
    this.#ns = ns;
    this.audit = new RoleAudit({ log: (l) => this.#lines.push(l) });
  }

  async start(): Promise<void> {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfigPath());
    for (const [kind, plural, k8sKind] of [
      ['rv', 'replicatedvolumes', 'ReplicatedVolume'],
      ['rvr', 'replicatedvolumereplicas', 'ReplicatedVolumeReplica'],
    ] as const) {
      const w = new ResumableWatch(
        kc,
        'tandem.dev/v1alpha1',
        k8sKind,
        this.#ns,
        `/apis/tandem.dev/v1alpha1/namespaces/${this.#ns}/${plural}`,
      );
      w.onEvent = (type, obj) => this.#pending.push({ kind, type, obj: obj as Arrived['obj'] });
      this.#watches.push(w);
      await w.start();
    }
  }

  stop(): void {
    for (const w of this.#watches) w.stop();
  }

  /** Audits what arrived (in commit order); throws when a role changed without a cause. */
  async check(): Promise<void> {
    await sleep(1500); // both streams catch up with the last writes
    const batch = this.#pending.sort(
      (a, b) => Number(a.obj.metadata.resourceVersion ?? 0) - Number(b.obj.metadata.resourceVersion ?? 0),
    );
    this.#pending = [];
    const before = this.audit.violations.length;
    for (const e of batch) {
      const key = `${e.kind}/${e.obj.metadata.name}`;
      const version = `${key}@${e.obj.metadata.resourceVersion}`;
      if (this.#seen.has(version)) continue; // a relist repeats what was seen
      this.#seen.add(version);
      if (e.type === 'DELETED') {
        this.#last.delete(key);
        continue;
      }
      const old = this.#last.get(key);
      if (e.kind === 'rv') this.audit.volume(old, e.obj);
      else this.audit.replica(old, e.obj);
      this.#last.set(key, e.obj);
    }
    const found = this.audit.violations.slice(before);
    if (found.length > 0)
      throw new Error(
        `Role changes without a cause:\n  ${found.join('\n  ')}\nWhat the audit saw:\n  ${this.#lines.slice(-40).join('\n  ')}`,
      );
  }
}

/**
 * A RoleWatch on `ns` for the enclosing describe block, stopped in afterAll; the suite
 * starts it in its beforeAll once the CRDs exist (a list of an unknown kind is a 404).
 */
export function watchRoles(ns: string): RoleWatch {
  const w = new RoleWatch(ns);
  afterAll(() => w.stop());
  return w;
}
