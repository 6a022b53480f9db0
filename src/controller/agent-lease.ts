// Each node's agent renews a Lease, tandem-agent-NODE in the release namespace, every
// few seconds from its work loop (node-agent/agent.ts): the agent's liveness, read by
// roles.ts agentSilence beside the replica's own report.
/** A Lease's spec.renewTime as an ISO string (the client hands out a Date or a string). */
export function leaseRenewTime(lease: unknown): string | undefined {
  const t = (lease as { spec?: { renewTime?: unknown } } | undefined)?.spec?.renewTime;
  if (t instanceof Date) return Number.isNaN(t.getTime()) ? undefined : t.toISOString();
  return typeof t === 'string' && t ? t : undefined;
}
