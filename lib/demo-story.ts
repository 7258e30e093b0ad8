/**
 * What the demo tells: a plain-language summary of what its figures show (phrased from the
 * measured numbers, never assumed), with the caveats of a `--quick` run, and `results/README.md`
 * (tables, the ξ and NTK figures embedded, the settings and the seed).
 */
import type { AdditionResult, NegationResult } from './eval/evaluate';
import type { AlphaEdge, LrSelection, MeanStd } from './protocol';

export interface StoryInput {
  quick: boolean;
  addition: Pick<AdditionResult, 'regime' | 'chosenAlpha' | 'test'>[];
  negation: Pick<NegationResult, 'regime' | 'meanTargetTest' | 'meanControlTest'>[];
  xi: Array<{ mode: 'nonlinear' | 'linear'; meanXi: number; lowErrorFraction: number }>;
  ntk: { meanMaxEnergy: number; tasks: number; topK: number; initMeanMaxEnergy?: number };
  tasks: string[];
  fineTuneSteps: number;
  /** Seeds run; with `headline`, a paragraph of mean ± std and the issue's claims checked. */
  seeds?: number;
  headline?: Record<string, MeanStd>;
  lrSelection?: LrSelection[];
  alphaEdges?: AlphaEdge[];
  pretrainedAcc?: number;
}

/** Eigenfunctions whose localization the demo reports (NTK at θ0 and at initialisation). */
export const NTK_TOP_K = 20;

/** What a demo run records (demo.json) that its summary rests on. */
export interface DemoRecord {
  quick: boolean;
  disentanglement: { seed0: StoryInput['xi'] };
  ntk: { meanMaxEnergy: number; init?: { meanMaxEnergy: number } };
  headline: Record<string, MeanStd>;
  lrSelection: LrSelection[];
  alphaEdges: AlphaEdge[];
  pretrained: { controlTest: number };
}

/** What the protocol report (protocol.json) gives the summary. */
export interface ProtocolRecord {
  addition: StoryInput['addition'];
  negation: StoryInput['negation'];
  seeds: readonly unknown[];
  settings: Record<string, unknown>;
}

/** The summary's input from a run's records: used by the demo itself and to re-word a finished run. */
export function storyInput(d: DemoRecord, p: ProtocolRecord): StoryInput {
  const tasks = p.settings['tasks'] as string[];
  const steps = (p.settings['finetune'] as { standard?: { steps?: number } } | undefined)?.standard?.steps;
  return {
    quick: d.quick,
    addition: p.addition,
    negation: p.negation,
    xi: d.disentanglement.seed0,
    ntk: { meanMaxEnergy: d.ntk.meanMaxEnergy, tasks: tasks.length, topK: NTK_TOP_K, initMeanMaxEnergy: d.ntk.init?.meanMaxEnergy },
    seeds: p.seeds.length,
    headline: d.headline,
    lrSelection: d.lrSelection,
    alphaEdges: d.alphaEdges,
    pretrainedAcc: d.pretrained.controlTest,
    tasks,
    fineTuneSteps: Number(steps ?? (d.quick ? 60 : 300)),
  };
}

const pm = (m: MeanStd | undefined, pct = true): string => (m ? (pct ? `${(100 * m.mean).toFixed(1)} ± ${(100 * m.std).toFixed(1)}` : `${m.mean.toFixed(2)} ± ${m.std.toFixed(2)}`) : 'n/a');

/**
 * The claims checked over seeds (issue 13's "Must show"), each held or not with its numbers. A
 * margin "beyond the seeds' std" means the difference of means exceeds the larger of the two stds.
 */
export function claimChecks(h: Record<string, MeanStd>, xiThreshold = 0.1): Array<{ claim: string; held: boolean; numbers: string }> {
  const out: Array<{ claim: string; held: boolean; numbers: string }> = [];
  const g = (k: string) => h[k];
  const margin = (a: MeanStd, b: MeanStd, min: number) => a.mean - b.mean >= min && a.mean - b.mean > Math.max(a.std, b.std);
  const ln = g('addition.linear.meanNorm'), nn = g('addition.nonlinear.meanNorm');
  if (ln && nn) out.push({ claim: 'linear FT ahead on mean normalized addition accuracy by ≥ 5 points, beyond the std', held: margin(ln, nn, 0.05), numbers: `${pm(ln)} vs ${pm(nn)}` });
  const la = g('addition.linear.meanAbs'), na = g('addition.nonlinear.meanAbs');
  if (la && na) out.push({ claim: 'linear FT ahead on mean absolute addition accuracy by ≥ 2 points, beyond the std', held: margin(la, na, 0.02), numbers: `${pm(la)} vs ${pm(na)}` });
  const gap = g('singleTask.gapStandardMinusLinear');
  if (gap) out.push({ claim: 'single-task gap standard − linear ≤ 8 points', held: gap.mean <= 0.08, numbers: `${pm(gap)} (standard ${pm(g('singleTask.standard'))}, linear ${pm(g('singleTask.linear'))})` });
  const lt = g('negation.linear.target'), nt = g('negation.nonlinear.target');
  if (lt && nt) out.push({ claim: 'negation target lower for linear FT (control ≥ 0.95 × pre-trained)', held: lt.mean < nt.mean, numbers: `${pm(lt)} vs ${pm(nt)} (control ${pm(g('negation.linear.control'))} vs ${pm(g('negation.nonlinear.control'))})` });
  const xl = g(`xi.linear.below${xiThreshold}`), xn = g(`xi.nonlinear.below${xiThreshold}`);
  if (xl && xn) out.push({ claim: `larger low-ξ area (ξ ≤ ${xiThreshold}) for linear FT`, held: xl.mean > xn.mean, numbers: `${pm(xl)}% vs ${pm(xn)}% of the grid (mean ξ ${pm(g('xi.linear.mean'), false)} vs ${pm(g('xi.nonlinear.mean'), false)})` });
  return out;
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

/** The summary, one paragraph per finding, each stating the numbers it rests on. */
export function demoSummary(s: StoryInput): string[] {
  const out: string[] = [];
  const add = new Map(s.addition.map((r) => [r.regime, r]));
  const neg = new Map(s.negation.map((r) => [r.regime, r]));
  const nl = add.get('nonlinear');
  const lin = add.get('linear');
  if (nl && lin) {
    const normBetter = lin.test.meanNorm > nl.test.meanNorm;
    // Within 2 points is called a tie: a one-seed margin that small means nothing.
    const normTie = Math.abs(lin.test.meanNorm - nl.test.meanNorm) < 0.02;
    const absBetter = lin.test.meanAbs > nl.test.meanAbs;
    const absTie = Math.abs(lin.test.meanAbs - nl.test.meanAbs) < 0.02;
    out.push(
      `Task addition (one model for ${s.tasks.length} tasks: θ0 + α Σ τ_t): linear fine-tuning reached a normalized accuracy of ${pct(lin.test.meanNorm)} against ${pct(nl.test.meanNorm)} for standard fine-tuning — ` +
        (normTie
          ? `a tie (within 2 points), not the clear advantage the paper finds`
          : normBetter
            ? 'its task vectors interfere less when added, as the paper finds'
            : 'here it did NOT interfere less, unlike in the paper') +
        `. On absolute accuracy linear FT scored ${pct(lin.test.meanAbs)} against ${pct(nl.test.meanAbs)}` +
        (absTie
          ? ' (within 2 points: a tie).'
          : absBetter
            ? '.'
            : ': normalized accuracy divides by each mode’s own single-task accuracy, and linear FT reaches lower single-task accuracy, so it can lead on one measure and trail on the other.'),
    );
  }
  const nn = neg.get('nonlinear');
  const ln = neg.get('linear');
  if (nn && ln)
    out.push(
      `Task negation (forgetting one task, θ0 − α τ_t, while the control task keeps ≥ 95% of its accuracy): the negated tasks' accuracy fell to ${pct(ln.meanTargetTest)} with linear FT and ${pct(nn.meanTargetTest)} with standard FT ` +
        `(control ${pct(ln.meanControlTest)} and ${pct(nn.meanControlTest)}) — ${ln.meanTargetTest < nn.meanTargetTest ? 'linear task vectors remove a task more cleanly' : 'standard task vectors removed it as well or better here'}.`,
    );
  const xn = s.xi.find((x) => x.mode === 'nonlinear');
  const xl = s.xi.find((x) => x.mode === 'linear');
  if (xn && xl)
    out.push(
      `Weight disentanglement (the heatmaps): ξ(α1, α2) measures how much adding two task vectors changes each task's predictions compared with adding each alone (0 = no interference). Mean ξ was ${xl.meanXi.toFixed(2)} for linear FT against ${xn.meanXi.toFixed(2)} for standard FT ` +
        `(ξ ≤ 0.1 on ${pct(xl.lowErrorFraction)} vs ${pct(xn.lowErrorFraction)} of the grid): ` +
        (xl.meanXi >= xn.meanXi
          ? 'no disentanglement advantage for linear FT in this run'
          : xl.lowErrorFraction > xn.lowErrorFraction
            ? 'linear task vectors are more disentangled, which is why they add and subtract better'
            : 'lower on average for linear FT, but with less of the grid at ξ ≤ 0.1 — only a partial disentanglement advantage') +
        '.',
    );
  out.push(
    `NTK eigenfunctions (the bar chart): the top ${s.ntk.topK} eigenfunctions of the kernel at θ0 hold on average ${pct(s.ntk.meanMaxEnergy)} of their energy on a single task, against ${pct(1 / s.ntk.tasks)} for an even spread — ` +
      (s.ntk.meanMaxEnergy > 1.5 / s.ntk.tasks ? 'they are localized on tasks, the property the paper ties to disentanglement.' : 'only weak localization at this scale (the paper sees it for CLIP-sized pre-training).'),
  );
  if (s.ntk.initMeanMaxEnergy !== undefined)
    out.push(
      `NTK at a random initialisation of the same architecture, same inputs: ${pct(s.ntk.initMeanMaxEnergy)} of the energy on one task, against ${pct(s.ntk.meanMaxEnergy)} at θ0 — ` +
        (s.ntk.meanMaxEnergy > s.ntk.initMeanMaxEnergy ? 'pre-training increased the localization, as the paper argues.' : 'pre-training did NOT increase the localization at this scale.'),
    );
  if (s.lrSelection?.length)
    out.push(
      `Recipe: the learning rate was chosen per mode on validation data (mean single-task validation accuracy, seed 0, ${s.fineTuneSteps} steps for both modes): ` +
        s.lrSelection
          .map((l) => `${l.mode} lr ${l.chosen} from {${l.grid.join(', ')}}` + (l.extendedWith?.length ? ` (grid extended upwards with ${l.extendedWith.join(', ')}: the best sat on its edge)` : '') + (l.stillOnEdge ? ', still the largest tried' : ''))
          .join('; ') +
        (s.pretrainedAcc !== undefined ? `. θ0's pre-training accuracy (control task, test): ${pct(s.pretrainedAcc)}.` : '.'),
    );
  if (s.alphaEdges?.length) {
    const ext = s.alphaEdges.filter((e) => e.extended);
    const still = s.alphaEdges.filter((e) => e.stillOnEdge);
    out.push(
      `α grid edges: ${ext.length} of ${s.alphaEdges.length} sweeps chose α on the upper edge of the first grid (0..${s.alphaEdges[0]!.gridMax}) and were re-run on the extended grid` +
        (ext.length ? ` (${ext.map((e) => `${e.kind} ${e.regime} seed ${e.seed}: ${e.firstChoice.join('/')} → ${e.finalChoice.join('/')}`).join('; ')})` : '') +
        (still.length ? `; ${still.length} still sit on the edge of the grid they were chosen on.` : '.'),
    );
  }
  if (s.headline && s.seeds !== undefined) {
    const checks = claimChecks(s.headline);
    if (checks.length)
      out.push(
        `Over ${s.seeds} seed${s.seeds === 1 ? '' : 's'} (mean ± std): ` + checks.map((c) => `${c.claim}: ${c.held ? 'held' : 'NOT held'} (${c.numbers})`).join('; ') + '.' +
          (s.seeds < 2 ? ' With one seed the std is 0: no margin can be told from noise.' : ''),
      );
  }
  if (s.quick)
    out.push(
      `This was the --quick run (one seed, ${s.fineTuneSteps} fine-tuning steps per task, small validation and test subsets): it can show the pipeline working end to end and the direction of each comparison; it cannot show any margin against seed noise (no error bars: differences of a few points between regimes are within its noise), nor the full run's gaps (README, "What npm run demo does"). Run \`npm run demo\` without --quick for those.`,
    );
  return out;
}

/** results/README.md: what was run, the summary, the tables and the figures. */
export function resultsReadme(o: { quick: boolean; summary: string[]; markdown: string; settings: Record<string, unknown>; seed: number; seeds?: number; libtorch: string; threads: number; seconds: number; date: string }): string {
  return [
    `# tangent-edit demo results${o.quick ? ' (--quick)' : ''}`,
    '',
    `Produced by \`tangent demo${o.quick ? ' --quick' : ''}\` on ${o.date} in ${o.seconds.toFixed(0)} s (libtorch ${o.libtorch}, ${o.threads} threads). Seeds: ${o.seed} for the initialization, the train/validation split and the batch order; the seeded subsets of the splits use seed 1. ${o.seeds && o.seeds > 1 ? `Fine-tuning and evaluation repeated for seeds 0..${o.seeds - 1} (seed s: batch order; θ0 and heads shared); mean ± std over seeds reported, detailed tables for seed 0.` : 'One fine-tuning seed: no error bars.'}`,
    '',
    '## What it shows',
    '',
    ...o.summary.flatMap((p) => [p, '']),
    '## Tables',
    '',
    'Accuracies in %, on the test split, at the α chosen on validation. Regimes: non-linear = standard fine-tuning, task vectors applied to f; post-hoc = the same task vectors evaluated in the linearized model f_lin; linear = fine-tuning inside f_lin.',
    '',
    o.markdown,
    '',
    '## Figures',
    '',
    'Weight disentanglement error ξ(α1, α2) of the first two tasks (lower is better; left: standard FT, right: linear FT):',
    '',
    '![weight disentanglement](disentanglement.png)',
    '',
    'Local energy of the top NTK eigenfunctions at θ0 on each task (one colour per task):',
    '',
    '![NTK eigenfunctions](ntk.png)',
    '',
    'The same at a random initialisation of the same architecture:',
    '',
    '![NTK eigenfunctions at init](ntk-init.png)',
    '',
    '## Settings',
    '',
    '```json',
    JSON.stringify(o.settings, null, 2),
    '```',
    '',
    'Files: protocol.md / protocol.json (every α), disentanglement.json, ntk.json, demo.json; the checkpoints in work/.',
    '',
  ].join('\n');
}
