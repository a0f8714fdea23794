// stdin: JSON array of PromQL expressions.
// stdout: JSON array of {expr, metrics: [names...], errors: [text...]}, one per expression.
// Metric names are taken from every vector selector: `name{...}` and `{__name__="name"}`.
import { readFileSync } from 'node:fs';
import { parser } from '@prometheus-io/lezer-promql';

const exprs = JSON.parse(readFileSync(0, 'utf8'));
if (!Array.isArray(exprs) || !exprs.every((e) => typeof e === 'string')) {
  throw new Error('expected a JSON array of strings on stdin');
}

// Metric names need no escapes, so the literal's inner text is the name.
const unquote = (literal) => literal.slice(1, -1);

const result = exprs.map((expr) => {
  const metrics = new Set();
  const errors = [];
  const text = (node) => expr.slice(node.from, node.to);
  parser.parse(expr).iterate({
    enter(ref) {
      if (ref.type.isError) {
        errors.push(`syntax error at ${ref.from}: ${JSON.stringify(expr.slice(ref.from, ref.from + 30))}`);
        return;
      }
      if (ref.name !== 'VectorSelector') {
        return;
      }
      const node = ref.node;
      const ident = node.getChild('Identifier');
      let named = false;
      if (ident) {
        metrics.add(text(ident));
        named = true;
      }
      const matchers = node.getChild('LabelMatchers');
      for (const m of matchers ? matchers.getChildren('UnquotedLabelMatcher') : []) {
        const name = m.getChild('LabelName');
        const op = m.getChild('MatchOp');
        const value = m.getChild('StringLiteral');
        if (name && text(name) === '__name__' && op && value) {
          if (text(op) !== '=') {
            errors.push(`__name__ must be matched with '=' to be checked: ${text(m)}`);
          } else {
            metrics.add(unquote(text(value)));
            named = true;
          }
        }
      }
      if (!named) {
        errors.push(`selector without a metric name: ${text(node)}`);
      }
    },
  });
  return { expr, metrics: [...metrics].sort(), errors };
});
process.stdout.write(JSON.stringify(result, null, 1) + '\n');
