// The condition accumulator both reconcilers use: each step of a reconcile (or
// of an agent's pass) records its outcome as a metav1.Condition; the status is
// written once at the end with the list this builds. A condition whose status
// did not change keeps its lastTransitionTime (setCondition).
import { type Condition, type ConditionInput, setCondition } from '../api/condition.ts';

export class Conditions {
  #list: Condition[];
  readonly #generation: number;
  readonly #now: Date;

  constructor(previous: readonly Condition[] | undefined, generation: number, now: Date) {
    this.#list = [...(previous ?? [])];
    this.#generation = generation;
    this.#now = now;
  }

  set(c: Omit<ConditionInput, 'observedGeneration'>): this {
    this.#list = setCondition(this.#list, { ...c, observedGeneration: this.#generation }, this.#now);
    return this;
  }

  get(type: string): Condition | undefined {
    return this.#list.find((c) => c.type === type);
  }

  get list(): Condition[] {
    return this.#list;
  }
}
