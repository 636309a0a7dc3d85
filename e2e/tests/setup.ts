// After a failed e2e test, say which containers of its test bed exited and how their logs ended.
import { afterEach } from 'vitest';
import { containerExits } from './helpers.js';

afterEach(({ task }) => {
  if (task.result?.state !== 'fail') return;
  const exits = containerExits();
  if (exits) console.error(`containers that exited during "${task.name}":\n${exits}`);
});
