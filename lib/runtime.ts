// What the native core can do here, and process-wide settings.
import { addon, type NativeInfo } from './native/addon.js';
import type { Device } from './tensor.js';

export interface Info extends NativeInfo {
  backends: Device[];
}

export function info(): Info {
  const i = addon().info();
  return { ...i, backends: i.cudaCompiled ? ['cpu', 'cuda'] : ['cpu'] };
}

export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`setNumThreads: expected a positive integer, got ${n}`);
  addon().setNumThreads(n);
}

/** CUDA caching-allocator statistics in bytes (zeros without CUDA). */
export function memoryStats(): { reserved: number; used: number; peakUsed: number } {
  return addon().cudaMemoryStats();
}

/**
 * Native buffers alive in this process, on any device: tensor storages neither disposed nor yet
 * collected. A loop that disposes what it makes keeps this number flat.
 */
export function liveStorages(): number {
  return addon().liveStorages();
}

export function synchronize(device: Device = 'cuda'): void {
  addon().synchronize(device === 'cuda' ? 1 : 0);
}
