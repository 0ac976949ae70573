// `npm run bench -- train-demo [demo flags]`: the demo end to end, timed; prints the held-out
// zero-shot accuracy next to chance and the training time (target: at most 3 minutes on 2 cores).
import { runDemo } from '../lib/cli/demo.js';

async function main() {
  const t0 = performance.now();
  const r = await runDemo(process.argv.slice(2));
  if (!r) return;
  console.log(JSON.stringify({
    bench: 'train-demo', heldOutAccuracy: r.heldOut, seenAccuracy: r.seen, chance: r.chance, steps: r.steps,
    trainSeconds: +r.trainSeconds.toFixed(1), totalSeconds: +((performance.now() - t0) / 1000).toFixed(1), parameters: r.parameters,
  }));
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
