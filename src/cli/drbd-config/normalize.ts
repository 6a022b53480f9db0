// Turns the parser's draft into the typed config the engine consumes:
// `common` merged under each resource (the resource wins), resource-level
// device/disk/meta-disk/address inherited by each `on` section (the section wins),
// the minor number worked out, and the result checked against the zod schema,
// which also fills in DRBD's defaults.
import type { z } from 'zod';
import { ResourceConfig, TandemConfig } from '../../api/config.ts';
import { ConfigError } from './config-error.ts';
import type { ConfigDraft, HostDraft, OnSectionDraft, ResourceDraft, SettingsDraft } from './draft.ts';

export function normalize(draft: ConfigDraft): TandemConfig {
  return TandemConfig.parse({
    global: { usageCount: draft.usageCount, options: draft.globalOptions },
    resources: draft.resources.map((resource) => normalizeResource(resource, draft.common)),
  });
}

function mergeSettings(common: SettingsDraft, own: SettingsDraft): SettingsDraft {
  return {
    protocol: own.protocol ?? common.protocol,
    net: { ...common.net, ...own.net },
    disk: { ...common.disk, ...own.disk },
    handlers: { ...common.handlers, ...own.handlers },
    startup: { ...common.startup, ...own.startup },
    options: { ...common.options, ...own.options },
  };
}

function normalizeResource(resource: ResourceDraft, common: SettingsDraft): ResourceConfig {
  const where = `resource ${resource.name}`;
  if (resource.hosts.length === 0) throw new ConfigError(`${where}: no 'on HOST' sections`, resource.at);
  const settings = mergeSettings(common, resource.settings);
  const net = settings.net;
  if (net.tls === true) {
    const missing = (['tls-ca', 'tls-cert', 'tls-key'] as const).filter(
      (k) => ({ 'tls-ca': net.tlsCa, 'tls-cert': net.tlsCert, 'tls-key': net.tlsKey })[k] === undefined,
    );
    if (missing.length > 0)
      throw new ConfigError(`${where}: net { tls yes; } needs ${missing.join(', ')}`, resource.at);
  }
  const candidate: z.input<typeof ResourceConfig> = {
    name: resource.name,
    protocol: settings.protocol,
    hosts: resource.hosts.map((on) => resolveHost(resource, on)),
    net: settings.net,
    disk: settings.disk,
    handlers: settings.handlers,
    startup: settings.startup,
    options: settings.options,
    source: `${resource.at.file}:${resource.at.line}`,
  };
  const result = ResourceConfig.safeParse(candidate);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ');
    throw new ConfigError(`${where}: ${problems}`, resource.at);
  }
  return result.data;
}

function resolveHost(resource: ResourceDraft, on: OnSectionDraft): z.input<typeof ResourceConfig>['hosts'][number] {
  const host: HostDraft = { ...resource.defaults, ...on };
  const { disk, metaDisk, address } = host;
  if (disk === undefined || metaDisk === undefined || address === undefined) {
    const missing = [
      disk === undefined && "'disk'",
      metaDisk === undefined && "'meta-disk'",
      address === undefined && "'address'",
    ];
    throw new ConfigError(
      `resource ${resource.name}: on ${on.name}: missing ${missing.filter(Boolean).join(', ')}`,
      on.at,
    );
  }
  const path = host.device?.path;
  const minorFromPath = path === undefined ? undefined : /drbd(\d+)$/.exec(path)?.[1];
  return {
    name: on.name,
    device: path,
    minor: host.device?.minor ?? (minorFromPath === undefined ? 0 : Number(minorFromPath)),
    disk,
    metaDisk,
    address,
  };
}
