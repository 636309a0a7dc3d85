// Rotating a cluster's workload CA with overlapping trust, as the state of its Secret (skein-workload-ca)
// moves through three phases. Every holder of the trust bundle must trust a CA before anything it signs is
// presented, and keep trusting the old one until nothing it signed is left:
//
//   idle       ca.crt/ca.key sign; the bundle is ca.crt.
//   prepared   next.crt/next.key made; the bundle is ca.crt + next.crt (published everywhere first); ca signs.
//   activated  next became ca (signs every SVID from now on, held ones are re-issued); the old CA is kept as
//              retiring.crt (its key dropped): the bundle is ca.crt + retiring.crt.
//   idle       after a grace, retiring.crt removed: the bundle is the new CA alone.
//
// Pure functions over the Secret's string data, so the CLI that drives a rotation and the apiserver that
// follows it read the same state; a transition out of order is an error naming the phase it needs.
import type { PemPair } from './x509.js';
import { joinPemCertificates } from './trust-bundle.js';

export const ROTATION_PHASES = ['idle', 'prepared', 'activated'] as const;
export type RotationPhase = (typeof ROTATION_PHASES)[number];

/** The steps of a rotation, in order, and the phase each one needs. */
export const ROTATION_STEPS = { prepare: 'idle', activate: 'prepared', retire: 'activated' } as const satisfies Record<string, RotationPhase>;
export type RotationStep = keyof typeof ROTATION_STEPS;

type Data = Record<string, string>;

export interface WorkloadCaState {
  phase: RotationPhase;
  /** The CA that signs SVIDs now. */
  signing: PemPair;
  /** Every CA holders must trust now (PEM bundle), the signing one first. */
  bundlePem: string;
  /** When the phase began (ISO time; absent before any rotation). */
  since?: string;
}

export class RotationStateError extends Error {}

/** The rotation state a Secret's data holds; throws naming the key when it is inconsistent. */
export function workloadCaState(data: Data): WorkloadCaState {
  if (!data['ca.crt'] || !data['ca.key']) throw new RotationStateError('the workload CA Secret lacks ca.crt or ca.key');
  const hasNext = Boolean(data['next.crt'] || data['next.key']);
  if (hasNext && !(data['next.crt'] && data['next.key'])) throw new RotationStateError('the workload CA Secret has only one of next.crt and next.key: a prepared rotation needs both');
  if (hasNext && data['retiring.crt']) throw new RotationStateError('the workload CA Secret has both next.crt (prepared) and retiring.crt (activated): at most one rotation runs at a time');
  const phase: RotationPhase = hasNext ? 'prepared' : data['retiring.crt'] ? 'activated' : 'idle';
  const extra = phase === 'prepared' ? [data['next.crt']!] : phase === 'activated' ? [data['retiring.crt']!] : [];
  return {
    phase,
    signing: { certPem: data['ca.crt'], keyPem: data['ca.key'] },
    bundlePem: joinPemCertificates([data['ca.crt'], ...extra]),
    since: data['rotation-since'],
  };
}

/** The Secret's data after `step`, or an error naming the phase the step needs. `next` is prepare's new CA. */
export function rotate(data: Data, step: RotationStep, now: Date, next?: PemPair): Data {
  const { phase } = workloadCaState(data);
  const needs = ROTATION_STEPS[step];
  if (phase !== needs) throw new RotationStateError(`step ${step} needs phase ${needs}, and the workload CA is in phase ${phase}${data['rotation-since'] ? ` since ${data['rotation-since']}` : ''}`);
  const since = { 'rotation-since': now.toISOString() };
  const { 'next.crt': nextCrt, 'next.key': nextKey, 'retiring.crt': _retiring, ...rest } = data;
  switch (step) {
    case 'prepare':
      if (!next) throw new RotationStateError('step prepare needs the new CA');
      return { ...rest, 'next.crt': next.certPem, 'next.key': next.keyPem, ...since };
    case 'activate':
      return { ...rest, 'ca.crt': nextCrt!, 'ca.key': nextKey!, 'retiring.crt': data['ca.crt']!, ...since };
    case 'retire':
      return { ...rest, ...since };
  }
}

/** The step that moves a rotation on from `phase`, or undefined when none runs. */
export function nextStep(phase: RotationPhase): RotationStep | undefined {
  return phase === 'prepared' ? 'activate' : phase === 'activated' ? 'retire' : undefined;
}
