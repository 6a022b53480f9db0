// metav1.Condition, as controllers and agents write it, and the helper that sets
// one in a list keeping lastTransitionTime when the status did not change.
import { z } from 'zod';

export const CONDITION_STATUSES = ['True', 'False', 'Unknown'] as const;

export const Condition = z.object({
  type: z.string().min(1).max(316).describe('The condition, e.g. Ready.'),
  status: z.enum(CONDITION_STATUSES).describe('True, False or Unknown.'),
  observedGeneration: z.number().int().min(0).optional().describe('The spec generation it was set for.'),
  lastTransitionTime: z
    .string()
    .meta({ format: 'date-time' })
    .describe('When status last changed (not when it was last written).'),
  reason: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
    .describe('One CamelCase word for programs and alerts.'),
  message: z.string().max(32768).describe('What happened and, when something is wrong, what to do.'),
});
export type Condition = z.infer<typeof Condition>;

export type ConditionInput = Omit<Condition, 'lastTransitionTime'>;

/** The list with `c` set: same status keeps its lastTransitionTime, a change takes `now`. */
export function setCondition(list: readonly Condition[], c: ConditionInput, now: Date): Condition[] {
  const old = list.find((x) => x.type === c.type);
  const lastTransitionTime =
    old && old.status === c.status ? old.lastTransitionTime : now.toISOString().replace(/\.\d+Z$/, 'Z');
  return [...list.filter((x) => x.type !== c.type), { ...c, lastTransitionTime }].sort((a, b) =>
    a.type.localeCompare(b.type),
  );
}

export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}
