// DRBD's suspended I/O ("s" in the r----- flags): while frozen, application
// requests wait and none completes. Fencing freezes a Primary that lost its peer
// until the fence-peer handler has made sure the peer cannot take over; a thaw
// either lets the waiting requests go on or fails them all with EIO.

export class IoFreeze {
  #gate: Promise<boolean> = Promise.resolve(true);
  #release: ((go: boolean) => void) | undefined;

  get frozen(): boolean {
    return this.#release !== undefined;
  }

  /** Resolves true when a request may proceed, false when the freeze ended by failing requests. */
  pass(): Promise<boolean> {
    return this.#gate;
  }

  freeze(): void {
    if (this.#release) return;
    this.#gate = new Promise<boolean>((resolve) => {
      this.#release = resolve;
    });
  }

  /** `go` false: the frozen requests fail instead of proceeding. */
  thaw(go: boolean): void {
    const release = this.#release;
    if (!release) return;
    this.#release = undefined;
    this.#gate = Promise.resolve(true);
    release(go);
  }
}
