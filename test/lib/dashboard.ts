// The chart's Grafana dashboard (helm/tandem/dashboards/tandem-volumes.json), read the
// way the tests need it: every panel's PromQL with the variables Grafana would fill in.
export type Dashboard = {
  panels: { type: string; title: string; targets?: { expr: string; legendFormat?: string }[] }[];
};

export type DashboardQuery = { panel: string; expr: string };

/** Every target's expression, $namespace, $volume and $__rate_interval substituted. */
export function dashboardQueries(
  d: Dashboard,
  vars: { namespace: string; volume: string; rateInterval: string },
): DashboardQuery[] {
  return d.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({
      panel: p.title,
      expr: t.expr
        .replaceAll('$__rate_interval', vars.rateInterval)
        .replaceAll('$namespace', vars.namespace)
        .replaceAll('$volume', vars.volume),
    })),
  );
}
