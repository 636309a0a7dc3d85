// `skein ca rotate --context C`: rotates cluster C's workload CA (its SPIFFE trust domain's) with overlapping
// trust, through C's Kubernetes API only, as `skein connect` works. Each step writes the workload CA Secret
// (mtls/ca-rotation.ts; compare-and-swap on its resourceVersion, so two runs cannot interleave) and then
// waits until the cluster shows it done, reading /v1/status through the service proxy. What a step needs is
// waited for before it is written, so a step resumed (--resume, --step) after an interrupted run is as safe:
//   prepare   a new CA made here; the bundle (C's agents', and its peers' through the exported bundle their
//             sync reads) carries old + new. Done once C's agents and those of every --peer-context serve both.
//   activate  needs that, and --grace since prepare for peers not watched. The new CA signs; every agent
//             re-issues the SVIDs it holds.
//   retire    needs C's agents to hold SVIDs of the new CA only, and --grace (at least the JWT-SVID lifetime,
//             so every token the old key signed has expired) since activate. The old CA leaves the bundle;
//             done once every watched agent serves the new CA alone.
// The phase lives in the Secret: an interrupted run is finished with --resume, one step is run with --step.
import { X509Certificate } from 'node:crypto';
import type { Command } from 'commander';
import type { KubeConfig } from '@kubernetes/client-node';
import { isConflict, KubeRest } from '../../mesh/kube/rest.js';
import { decodeSecretData } from '../../mesh/kube/secrets.js';
import type { Secret } from '../../mesh/kube/objects.js';
import { SKEIN_NAMESPACE } from '../../mesh/service-ref.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { newWorkloadCA, WORKLOAD_CA_SECRET } from '../../mtls/cluster-ca.js';
import { nextStep, rotate, ROTATION_STEPS, RotationStateError, workloadCaState, type RotationPhase, type RotationStep } from '../../mtls/ca-rotation.js';
import { splitPemCertificates } from '../../mtls/trust-bundle.js';
import { positiveInt } from './flags.js';
import { fetchStatus, kubeconfigFor, type Progress } from './status.js';

const STEPS = Object.keys(ROTATION_STEPS) as RotationStep[];
const serialOf = (pem: string) => new X509Certificate(pem).serialNumber;
const isStep = (s: string): s is RotationStep => (STEPS as string[]).includes(s);
const notAStep = (s: string) => `--step ${s}: not a step; use one of ${STEPS.join(', ')} (in that order)`;

/**
 * The steps this run takes from `phase`, or an error naming the flag and the fix: a new rotation only from
 * idle, --resume only while one runs, --step only the one the phase allows.
 */
export function planSteps(phase: RotationPhase, since: string | undefined, o: { context: string; step?: string; resume?: boolean }): RotationStep[] {
  const cmd = `skein ca rotate --context ${o.context}`;
  const at = `phase ${phase}${since ? ` since ${since}` : ''}`;
  if (o.step !== undefined) {
    if (!isStep(o.step)) throw new Error(notAStep(o.step));
    const step = o.step;
    if (ROTATION_STEPS[step] === phase) return [step];
    const due = phase === 'idle' ? 'prepare' : nextStep(phase)!;
    throw new Error(`--step ${step}: the workload CA of ${o.context} is in ${at}, and ${step} follows ${ROTATION_STEPS[step]}: run \`${cmd} --step ${due}\` next (a CA signs only once every bundle trusts it, and is retired only once nothing it signed is left)`);
  }
  if (o.resume) {
    const first = nextStep(phase);
    if (!first) throw new Error(`--resume: no rotation of ${o.context}'s workload CA is in progress: run \`${cmd}\` to start one`);
    return STEPS.slice(STEPS.indexOf(first));
  }
  if (phase !== 'idle') throw new Error(`a rotation of ${o.context}'s workload CA is already in progress (${at}): run \`${cmd} --resume\` to finish it`);
  return [...STEPS];
}

interface Watched {
  name: string;
  kc: KubeConfig;
}

/** Why `s`'s agents do not all serve `want` (serials) for trust domain `td` yet, or undefined once they do. */
export function bundleLag(s: ApiserverStatus, td: string, want: string[]): string | undefined {
  const behind = s.agents.filter((a) => a.workload && [...(a.workload.bundles[td] ?? [])].sort().join() !== [...want].sort().join());
  if (behind.length) return `${s.cluster}: ${behind.map((a) => `${a.node} serves [${a.workload!.bundles[td]?.join(', ') ?? 'nothing'}]`).join('; ')}`;
  return undefined;
}

/** Why `s`'s agents still hold SVIDs of another CA than `signer`, or undefined once they hold only its. */
export function svidLag(s: ApiserverStatus, signer: string): string | undefined {
  const behind = s.agents.filter((a) => Object.keys(a.workload?.svidSigners ?? {}).some((by) => by !== signer));
  if (behind.length) return `${s.cluster}: ${behind.map((a) => `${a.node} holds SVIDs of ${Object.keys(a.workload!.svidSigners).join(', ')}`).join('; ')}`;
  return undefined;
}

export async function rotateWorkloadCa(o: { kc: KubeConfig; context: string; peers: Watched[]; step?: string; resume?: boolean; graceMs: number; timeoutMs: number; progress: Progress }): Promise<{ from: string; to: string; steps: RotationStep[] }> {
  const rest = new KubeRest(o.kc);
  const path = `/api/v1/namespaces/${SKEIN_NAMESPACE}/secrets/${WORKLOAD_CA_SECRET}`;
  const status = await fetchStatus(o.kc);
  if (!status.workloadCa || !status.trustDomain) throw new Error(`skein-apiserver in context ${o.context} does not report its workload CA: it predates CA rotation (or holds no CA); upgrade it first`);
  const td = status.trustDomain;
  for (const p of o.peers) {
    const s = await fetchStatus(p.kc);
    if (!s.remotes.some((r) => r.cluster === status.cluster)) throw new Error(`--peer-context ${p.name}: cluster ${s.cluster} is not connected to ${status.cluster} (it syncs ${s.remotes.map((r) => r.cluster).join(', ') || 'no cluster'}); give only peers of ${status.cluster}`);
  }
  const read = async () => {
    const secret = await rest.get<Secret>(path);
    return { resourceVersion: secret.metadata?.resourceVersion, data: decodeSecretData(secret.data) };
  };
  let current = await read();
  let state;
  try {
    state = workloadCaState(current.data);
  } catch (err) {
    throw new Error(`Secret ${SKEIN_NAMESPACE}/${WORKLOAD_CA_SECRET} of ${o.context}: ${(err as Error).message}; restore it from a backup before rotating`, { cause: err });
  }
  const steps = planSteps(state.phase, state.since, o);
  const from = status.workloadCa.signer;
  const waitFor = async (what: string, lag: () => Promise<string | undefined>) => {
    const deadline = Date.now() + o.timeoutMs;
    let last = '';
    for (;;) {
      const why = await lag();
      if (!why) return;
      if (why !== last) o.progress(`waiting for ${what}: ${why}`);
      last = why;
      if (Date.now() > deadline) throw new Error(`timed out after ${o.timeoutMs / 1000} s waiting for ${what} (${why}); once that is fixed run \`skein ca rotate --context ${o.context} --resume\``);
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  /** Every watched cluster's agents serve `want` for C's trust domain (C's own apiserver publishes it first). */
  const bundleEverywhere = (want: string[]) =>
    waitFor(`every watched agent to serve ${td}'s bundle [${want.join(', ')}]`, async () => {
      const own = await fetchStatus(o.kc);
      if (own.workloadCa?.bundle.join() !== want.join()) return `${own.cluster}'s skein-apiserver publishes [${own.workloadCa?.bundle.join(', ')}]`;
      for (const s of [own, ...(await Promise.all(o.peers.map((p) => fetchStatus(p.kc))))]) {
        const lag = bundleLag(s, td, want);
        if (lag) return lag;
      }
      return undefined;
    });
  const grace = async (since: number, why: string, atLeastMs = 0) => {
    const left = since + Math.max(o.graceMs, atLeastMs) - Date.now();
    if (left <= 0) return;
    o.progress(`waiting out the grace (${Math.ceil(left / 1000)} s more): ${why}`);
    await new Promise((r) => setTimeout(r, left));
  };
  /** When the phase the Secret is in began (a resumed run waits out what the interrupted one did not). */
  const phaseSince = () => Date.parse(current.data['rotation-since'] ?? '') || Date.now();
  /** Before each step, what it needs to be safe, whether this run or an earlier one wrote the step before. */
  const before: Partial<Record<RotationStep, () => Promise<void>>> = {
    activate: async () => {
      await bundleEverywhere(splitPemCertificates(workloadCaState(current.data).bundlePem).map(serialOf));
      await grace(phaseSince(), 'peers not watched with --peer-context follow through the bundle they sync');
    },
    retire: async () => {
      const signer = serialOf(workloadCaState(current.data).signing.certPem);
      await waitFor(`${status.cluster}'s agents to hold SVIDs of the new CA ${signer} only`, async () => {
        const own = await fetchStatus(o.kc);
        if (own.workloadCa?.signer !== signer) return `${own.cluster}'s node CA signs with ${own.workloadCa?.signer}`;
        return svidLag(own, signer);
      });
      // A JWT-SVID the old key signed just before stays valid for its whole lifetime: the key outlives it.
      const jwtTtlMs = (await fetchStatus(o.kc)).workloadCa?.jwtSvidTtlMs ?? 0;
      await grace(phaseSince(), 'workloads pick up their re-issued SVIDs, and JWT-SVIDs of the old key expire, before the old CA stops being trusted', jwtTtlMs);
    },
  };
  let to = from;
  for (const step of steps) {
    await before[step]?.();
    const next = step === 'prepare' ? await newWorkloadCA(status.cluster) : undefined;
    let data: Record<string, string>;
    try {
      data = rotate(current.data, step, new Date(), next);
    } catch (err) {
      if (err instanceof RotationStateError) throw new Error(`${o.context}: ${err.message}; run \`skein ca rotate --context ${o.context} --resume\``, { cause: err });
      throw err;
    }
    try {
      // Compare-and-swap: a concurrent run (or an edit) between our read and this write fails here, whole.
      await rest.put(path, { metadata: { name: WORKLOAD_CA_SECRET, namespace: SKEIN_NAMESPACE, resourceVersion: current.resourceVersion }, type: 'Opaque', data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])) });
    } catch (err) {
      if (isConflict(err)) throw new Error(`the workload CA Secret of ${o.context} changed while step ${step} was written (another skein ca rotate?): nothing was written by this step; check \`skein status --context ${o.context} --json\` and run \`skein ca rotate --context ${o.context} --resume\``, { cause: err });
      throw err;
    }
    current = await read();
    const now = workloadCaState(current.data);
    const bundle = splitPemCertificates(now.bundlePem).map(serialOf);
    to = serialOf(now.signing.certPem);
    o.progress(`${step}: ${describe(step, bundle, to)}`);
    // Prepare and retire change the bundle: done once every watched agent serves it.
    if (step !== 'activate') await bundleEverywhere(bundle);
  }
  return { from, to, steps };
}

function describe(step: RotationStep, bundle: string[], signer: string): string {
  if (step === 'prepare') return `published the new CA in the trust bundle [${bundle.join(', ')}]; ${signer} still signs`;
  if (step === 'activate') return `${signer} signs now; agents re-issue every SVID they hold; the bundle keeps [${bundle.join(', ')}]`;
  return `retired the old CA: the bundle is [${bundle.join(', ')}]`;
}

export function registerCa(program: Command): void {
  const progress = (m: string) => console.error(`  ${m}`);
  const ca = program.command('ca').description("a cluster's certificate authorities");
  ca.command('rotate')
    .description("rotate a cluster's workload CA (its SPIFFE trust domain) with overlapping trust: prepare, activate, retire")
    .requiredOption('--context <ctx>', 'kubeconfig context of the cluster whose CA rotates')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG or ~/.kube/config)')
    .option('--peer-context <ctx...>', "contexts of connected clusters whose agents must serve each bundle before the next step (others get --grace)")
    .option('--step <step>', `run one step only: ${STEPS.join(', ')} (in that order)`)
    .option('--resume', 'finish a rotation an earlier run left in progress')
    .option('--grace <seconds>', 'at least this long between publishing a bundle and the next step, for peers not watched', '60')
    .option('--timeout <seconds>', 'how long each step may take to show everywhere', '300')
    .action(async (o: { context: string; kubeconfig?: string; peerContext?: string[]; step?: string; resume?: boolean; grace: string; timeout: string }) => {
      const t0 = Date.now();
      const graceMs = Number.isSafeInteger(Number(o.grace)) && /^\d+$/.test(o.grace) ? Number(o.grace) * 1000 : NaN;
      if (Number.isNaN(graceMs)) throw new Error(`--grace ${o.grace}: use whole seconds, for example 60`);
      const timeoutMs = positiveInt('--timeout', o.timeout, 86_400) * 1000;
      if (o.step && o.resume) throw new Error('--step and --resume: give one of them (--resume runs every step left, --step one)');
      if (o.step !== undefined && !isStep(o.step)) throw new Error(notAStep(o.step));
      const kc = kubeconfigFor({ kubeconfig: o.kubeconfig, context: o.context });
      const peers = (o.peerContext ?? []).map((name) => {
        try {
          return { name, kc: kubeconfigFor({ kubeconfig: o.kubeconfig, context: name }) };
        } catch (err) {
          throw new Error(`--peer-context ${(err as Error).message.replace(/^--context /, '')}`, { cause: err });
        }
      });
      const r = await rotateWorkloadCa({ kc, context: o.context, peers, step: o.step, resume: o.resume, graceMs, timeoutMs, progress });
      const done = r.steps.at(-1) === 'retire' ? `rotated: ${r.from} -> ${r.to}` : `${r.steps.join(', ')} done (run \`skein ca rotate --context ${o.context} --resume\` to go on)`;
      console.log(`${o.context}: workload CA ${done} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });
}
