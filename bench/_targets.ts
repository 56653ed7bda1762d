/** The "target / measured / met?" table every benchmark prints under its figures. */
export interface TargetRow {
  target: string;
  measured: string;
  /** undefined when the figure could not be measured. */
  met: boolean | undefined;
}

export function targetTable(rows: TargetRow[]): string {
  const met = (m: boolean | undefined) => (m === undefined ? "not measured" : m ? "yes" : "**no**");
  return `| target | measured | met? |\n|---|---|---|\n${rows.map((r) => `| ${r.target} | ${r.measured} | ${met(r.met)} |`).join("\n")}`;
}
