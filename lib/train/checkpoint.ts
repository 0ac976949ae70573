// Training checkpoints: one directory per saved step holding the model (safetensors under the
// original names, loadable by loadCLIP), the optimizer moments and the run state (step, schedule,
// data position, seed). A checkpoint is assembled in a temporary directory, every file fsynced,
// then renamed into place, so a crash leaves the previous checkpoints intact. The last K are kept.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { fromFloat32, fromInt32, toFloat32, type RawTensor } from '../io/raw.js';
import { loadCLIP, loadStateDict } from '../models/load.js';
import { CLIP } from '../models/clip.js';
import { Random } from '../nn/random.js';
import type { Device } from '../tensor.js';
import type { CLIPConfig } from '../models/config.js';
import type { AdamW, AdamWStateDict } from '../optim/adamw.js';
import type { DataPosition } from '../data/types.js';
import type { ScheduleOptions } from './schedule.js';

export interface TrainState {
  /** Optimizer steps completed. */
  step: number;
  /** Data position after the last completed step. */
  position: DataPosition;
  schedule: ScheduleOptions;
  seed: number;
  accumFreq: number;
  batchSize: number;
  config: CLIPConfig;
  /** Names of the trained parameters in optimizer order (to check a resumed run trains the same set). */
  paramNames: string[];
}

const STEP_DIR = /^step-(\d+)$/;
const stepDirName = (step: number) => `step-${String(step).padStart(8, '0')}`;

async function fsyncPath(p: string): Promise<void> {
  const fh = await fsp.open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Saves a checkpoint under dir/step-NNNNNNNN and keeps the newest `keep`; returns its path. */
export async function saveTrainingCheckpoint(
  dir: string, model: CLIP, optimizer: AdamW, state: TrainState, keep = 3,
): Promise<string> {
  await fsp.mkdir(dir, { recursive: true });
  const final = path.join(dir, stepDirName(state.step));
  const tmp = path.join(dir, `.tmp-${stepDirName(state.step)}-${process.pid}`);
  await fsp.rm(tmp, { recursive: true, force: true });
  await fsp.mkdir(tmp);
  try {
    await saveModelWeights(model, path.join(tmp, 'model.safetensors'));
    const sd = optimizer.stateDict();
    const tensors = new Map<string, ReturnType<typeof fromFloat32>>();
    const steps: (number | null)[] = [];
    sd.params.forEach((p, i) => {
      steps.push(p ? p.step : null);
      if (!p) return;
      tensors.set(`m.${state.paramNames[i]}`, fromFloat32(p.m));
      tensors.set(`v.${state.paramNames[i]}`, fromFloat32(p.v));
    });
    const meta = { groups: sd.groups, betas: sd.betas, eps: sd.eps, steps };
    await writeSafetensors(path.join(tmp, 'optimizer.safetensors'), tensors, { 'tsclip.adamw': JSON.stringify(meta) });
    const stateFile = path.join(tmp, 'state.json');
    await fsp.writeFile(stateFile, JSON.stringify(state, null, 1));
    await fsyncPath(stateFile);
    await fsyncPath(tmp);
    await fsp.rm(final, { recursive: true, force: true });
    await fsp.rename(tmp, final);
    await fsyncPath(dir);
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true });
    throw new Error(`saving checkpoint ${final}: ${(e as Error).message}`);
  }
  await pruneCheckpoints(dir, keep);
  return final;
}

/** Checkpoint directories under dir, oldest first. */
export async function listCheckpoints(dir: string): Promise<{ step: number; path: string }[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => ({ m: STEP_DIR.exec(n), n }))
    .filter((x) => x.m)
    .map((x) => ({ step: Number(x.m![1]), path: path.join(dir, x.n) }))
    .sort((a, b) => a.step - b.step);
}

export async function latestCheckpoint(dir: string): Promise<string | null> {
  const all = await listCheckpoints(dir);
  return all.length ? all[all.length - 1].path : null;
}

async function pruneCheckpoints(dir: string, keep: number): Promise<void> {
  const all = await listCheckpoints(dir);
  for (const c of all.slice(0, Math.max(0, all.length - Math.max(1, keep)))) await fsp.rm(c.path, { recursive: true, force: true });
}

export async function readTrainState(ckpt: string): Promise<TrainState> {
  const file = path.join(ckpt, 'state.json');
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    throw new Error(`checkpoint ${ckpt}: no state.json (not a training checkpoint directory)`);
  }
  return JSON.parse(text) as TrainState;
}

/** Restores model weights and buffers, and the optimizer state, from a checkpoint directory. */
export async function loadTrainingCheckpoint(ckpt: string, model: CLIP, optimizer: AdamW, paramNames: string[]): Promise<TrainState> {
  const state = await readTrainState(ckpt);
  if (state.paramNames.join('\n') !== paramNames.join('\n')) {
    throw new Error(`checkpoint ${ckpt}: it trained ${state.paramNames.length} parameters, this run trains ${paramNames.length} (different model or locked towers)`);
  }
  const weights = await readSafetensors(path.join(ckpt, 'model.safetensors'));
  loadStateDict(model, weights.tensors, path.join(ckpt, 'model.safetensors'));
  const opt = await readSafetensors(path.join(ckpt, 'optimizer.safetensors'));
  const meta = JSON.parse(opt.metadata?.['tsclip.adamw'] ?? 'null') as { groups: AdamWStateDict['groups']; betas: [number, number]; eps: number; steps: (number | null)[] } | null;
  if (!meta) throw new Error(`checkpoint ${ckpt}: optimizer.safetensors has no tsclip.adamw metadata`);
  const sd: AdamWStateDict = {
    groups: meta.groups,
    betas: meta.betas,
    eps: meta.eps,
    params: meta.steps.map((s, i) => {
      if (s === null) return null;
      const m = opt.tensors.get(`m.${paramNames[i]}`), v = opt.tensors.get(`v.${paramNames[i]}`);
      if (!m || !v) throw new Error(`checkpoint ${ckpt}: optimizer state of "${paramNames[i]}" is missing`);
      return { step: s, m: toFloat32(m), v: toFloat32(v) };
    }),
  };
  optimizer.loadStateDict(sd);
  return state;
}

const CONFIG_KEY = 'tsclip.model';

/** The model's parameters and buffers under their original names, with its full config in the metadata. */
export async function saveModelWeights(model: CLIP, file: string): Promise<void> {
  const tensors = new Map<string, RawTensor>();
  for (const [name, t] of model.stateDict()) {
    const v = t.toArraySync();
    tensors.set(name, v instanceof Int32Array ? fromInt32(v, [...t.shape]) : fromFloat32(v as Float32Array, [...t.shape]));
  }
  await writeSafetensors(file, tensors, { format: 'openai-clip', [CONFIG_KEY]: JSON.stringify(model.config) });
}

/**
 * A model to train or evaluate from a training checkpoint directory, a model.safetensors written by
 * the trainer (any size, even below the 64-wide heads loadCLIP infers), or any checkpoint loadCLIP reads.
 */
export async function loadTrainedCLIP(p: string, opts: { device?: Device } = {}): Promise<CLIP> {
  let file = p;
  try {
    if ((await fsp.stat(p)).isDirectory() && (await fsp.stat(path.join(p, 'model.safetensors')).catch(() => null))) file = path.join(p, 'model.safetensors');
  } catch {
    throw new Error(`model ${p}: no such file or directory`);
  }
  if (file.endsWith('.safetensors')) {
    const st = await readSafetensors(file);
    const cfg = st.metadata?.[CONFIG_KEY];
    if (cfg) {
      const model = new CLIP(JSON.parse(cfg), { rng: new Random(0), device: opts.device ?? 'cpu' });
      loadStateDict(model, st.tensors, file);
      return model;
    }
  }
  return loadCLIP(file, { device: opts.device });
}
