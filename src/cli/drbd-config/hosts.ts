// Picking a resource by name, and this node's and the peer's `on` sections in it.
import type { HostConfig, ResourceConfig, TandemConfig } from '../../api/config.ts';
import { ConfigError } from './config-error.ts';

/** The resource called `name`; a ConfigError naming the known resources if there is none. */
export function findResource(config: TandemConfig, name: string): ResourceConfig {
  const resource = config.resources.find((r) => r.name === name);
  if (resource) return resource;
  const known = config.resources.map((r) => r.name).join(', ') || 'none';
  throw new ConfigError(`no resource '${name}' in the configuration (known: ${known})`);
}

/** This node's `on` section (matched by name) and the other one, if the resource has two. */
export function selectHosts(
  resource: ResourceConfig,
  nodeName: string,
): { self: HostConfig; peer: HostConfig | undefined } {
  const where = `resource ${resource.name}`;
  if (resource.hosts.length > 2) {
    throw new ConfigError(
      `${where}: only two nodes per resource are supported (found ${resource.hosts.length} 'on' sections)`,
      resource.source,
    );
  }
  const self = resource.hosts.find((h) => h.name === nodeName);
  if (!self) {
    const known = resource.hosts.map((h) => h.name).join(', ');
    throw new ConfigError(`${where}: no 'on' section matches node '${nodeName}' (known: ${known})`, resource.source);
  }
  return { self, peer: resource.hosts.find((h) => h !== self) };
}
