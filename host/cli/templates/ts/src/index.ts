/** The `{{name}}` bundle: flowcraft-host node types written with `flowcraft-node`. */
import { defineBundle, defineNode, InvalidInputError } from 'flowcraft-node';

/** Greets its input, a name, and counts greetings in the run context. */
export const greet = defineNode<string, { greeting?: string }, string, { greetings: number }>({
  uses: 'greet',
  description: 'Greets its input (a name)',
  run: ({ input, params, context, log }) => {
    if (typeof input !== 'string' || input.trim() === '') {
      throw new InvalidInputError('greet needs a name (a non-empty string) as its input');
    }
    const greetings = (context.get('greetings') ?? 0) + 1;
    context.set('greetings', greetings);
    log.info('greeting', { name: input, greetings });
    return { output: `${params.greeting ?? 'Hello'}, ${input}!` };
  },
});

export default defineBundle({ nodes: [greet] });
