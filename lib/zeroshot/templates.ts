// Prompt templates: a small default set, and prompt files of {classes, templates} (one task, or
// several tasks keyed by name, as ../shared/clip-data/zeroshot_prompts.json).
import { readFile } from 'node:fs/promises';

/** A class: one name, or several synonyms whose prompts are averaged into one embedding. */
export type ClassName = string | readonly string[];

/** Our default ensemble: varied enough to smooth out wording, short enough to embed quickly. */
export const DEFAULT_TEMPLATES: readonly string[] = Object.freeze([
  'a photo of a {}.',
  'a blurry photo of a {}.',
  'a close-up photo of the {}.',
  'a cropped photo of a {}.',
  'a drawing of a {}.',
  'a bright photo of the {}.',
  'a dark photo of a {}.',
  'an image showing a {}.',
]);

export interface PromptSet {
  classes: ClassName[];
  templates: string[];
}

/** Fills every "{}" of a template with the class name. */
export function fillTemplate(template: string, name: string): string {
  return template.split('{}').join(name);
}

export function checkTemplates(templates: readonly string[], where = 'templates'): void {
  if (!Array.isArray(templates) || templates.length === 0) throw new Error(`${where}: expected a non-empty list of templates`);
  templates.forEach((t, i) => {
    if (typeof t !== 'string' || !t.includes('{}')) throw new Error(`${where}[${i}]: template ${JSON.stringify(t)} has no "{}" for the class name`);
  });
}

export function checkClasses(classes: readonly ClassName[], where = 'classes'): void {
  if (!Array.isArray(classes) || classes.length === 0) throw new Error(`${where}: expected a non-empty list of class names`);
  classes.forEach((c, i) => {
    const names = typeof c === 'string' ? [c] : c;
    if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === 'string' && n.trim() !== '')) {
      throw new Error(`${where}[${i}]: expected a class name or a non-empty list of synonyms, found ${JSON.stringify(c)}`);
    }
  });
}

function asPromptSet(v: unknown, where: string): PromptSet {
  const o = v as { classes?: unknown; templates?: unknown };
  checkClasses(o.classes as ClassName[], `${where}: classes`);
  checkTemplates(o.templates as string[], `${where}: templates`);
  return { classes: o.classes as ClassName[], templates: o.templates as string[] };
}

/**
 * Reads a prompt file. `task` picks one entry of a file holding several ({name: {classes,
 * templates}}); "FILE#task" in the path does the same.
 */
export async function loadPromptFile(path: string, task?: string): Promise<PromptSet> {
  const hash = path.lastIndexOf('#');
  if (task === undefined && hash > 0) {
    task = path.slice(hash + 1);
    path = path.slice(0, hash);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`prompt file ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error(`prompt file ${path}: expected a JSON object`);
  const obj = doc as Record<string, unknown>;
  if ('classes' in obj || 'templates' in obj) {
    if (task !== undefined) throw new Error(`prompt file ${path}: holds one task, cannot pick "${task}"`);
    return asPromptSet(obj, `prompt file ${path}`);
  }
  const names = Object.keys(obj);
  if (task === undefined) {
    if (names.length === 1) return asPromptSet(obj[names[0]], `prompt file ${path} (${names[0]})`);
    throw new Error(`prompt file ${path}: holds ${names.length} tasks; pick one with FILE#task (${names.slice(0, 12).join(', ')}${names.length > 12 ? ', ...' : ''})`);
  }
  if (!(task in obj)) throw new Error(`prompt file ${path}: no task "${task}" (has ${names.slice(0, 12).join(', ')}${names.length > 12 ? ', ...' : ''})`);
  return asPromptSet(obj[task], `prompt file ${path} (${task})`);
}
