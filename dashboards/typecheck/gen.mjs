// Writes a TypeScript file that declares a Grafana dashboard JSON as typed constants, so that
// `tsc --strict` checks it against Grafana's own types from @grafana/schema:
//   - the whole dashboard as `Dashboard` (links, templating, annotations, time, ...);
//   - every panel again with its plugin's own Options and FieldConfig types (the
//     `composable/<plugin>/panelcfg` types that Grafana generates from each panel's schema),
//     and its targets as Prometheus queries (common DataQuery plus the Prometheus fields).
// JSON spells string enums as strings ("absolute", not ThresholdsMode.Absolute), so every type
// is wrapped in Json<T>, which turns string enums into the union of their string values and
// keeps everything else as strict as Grafana declares it (excess properties are errors).
//
// usage: node gen.mjs DASHBOARD.json OUT.ts
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const composable = 'node_modules/@grafana/schema/dist/esm/raw/composable';

// Panel plugin id -> folder of its generated types in @grafana/schema.
const PANEL_TYPES = {
  'annolist': 'annotationslist/panelcfg/x/AnnotationsListPanelCfg_types.gen',
  'barchart': 'barchart/panelcfg/x/BarChartPanelCfg_types.gen',
  'bargauge': 'bargauge/panelcfg/x/BarGaugePanelCfg_types.gen',
  'candlestick': 'candlestick/panelcfg/x/CandlestickPanelCfg_types.gen',
  'dashlist': 'dashboardlist/panelcfg/x/DashboardListPanelCfg_types.gen',
  'gauge': 'gauge/panelcfg/x/GaugePanelCfg_types.gen',
  'heatmap': 'heatmap/panelcfg/x/HeatmapPanelCfg_types.gen',
  'histogram': 'histogram/panelcfg/x/HistogramPanelCfg_types.gen',
  'piechart': 'piechart/panelcfg/x/PieChartPanelCfg_types.gen',
  'stat': 'stat/panelcfg/x/StatPanelCfg_types.gen',
  'state-timeline': 'statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen',
  'status-history': 'statushistory/panelcfg/x/StatusHistoryPanelCfg_types.gen',
  'table': 'table/panelcfg/x/TablePanelCfg_types.gen',
  'text': 'text/panelcfg/x/TextPanelCfg_types.gen',
  'timeseries': 'timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen',
  'trend': 'trend/panelcfg/x/TrendPanelCfg_types.gen',
  'xychart': 'xychart/panelcfg/x/XYChartPanelCfg_types.gen',
};

const [, , input, output] = process.argv;
if (!input || !output) {
  console.error('usage: node gen.mjs DASHBOARD.json OUT.ts');
  process.exit(2);
}

let dashboard;
try {
  dashboard = JSON.parse(readFileSync(input, 'utf8'));
} catch (err) {
  console.error(`${input}: not valid JSON: ${err.message}`);
  process.exit(1);
}
if (dashboard === null || typeof dashboard !== 'object' || Array.isArray(dashboard)) {
  console.error(`${input}: a dashboard must be a JSON object`);
  process.exit(1);
}

const imports = new Map(); // plugin id -> {alias, hasFieldConfig}
const problems = [];
const declarations = [];

function pluginTypes(type) {
  if (imports.has(type)) {
    return imports.get(type);
  }
  const module = PANEL_TYPES[type];
  if (!module) {
    return undefined;
  }
  const dts = join(here, composable, `${module}.d.ts`);
  if (!existsSync(dts)) {
    problems.push(`types for panel type ${type} not found at ${dts}`);
    return undefined;
  }
  const entry = {
    alias: `P_${type.replace(/[^A-Za-z0-9]/g, '_')}`,
    module: `@grafana/schema/dist/esm/raw/composable/${module}.js`,
    hasFieldConfig: /export interface FieldConfig\b/.test(readFileSync(dts, 'utf8')),
  };
  imports.set(type, entry);
  return entry;
}

function declarePanels(panels, path) {
  if (!Array.isArray(panels)) {
    return; // the Dashboard type reports it
  }
  panels.forEach((panel, index) => {
    const where = `${path}[${index}]`;
    const title = panel && typeof panel.title === 'string' ? panel.title : '(untitled)';
    const name = `panel_${declarations.length}`;
    const comment = `// ${where}: ${JSON.stringify(title).replace(/\*\//g, '* /')}`;
    if (panel && panel.type === 'row') {
      declarations.push(`${comment}\nexport const ${name}: Json<RowPanel> = ${JSON.stringify(panel, null, 2)};`);
      declarePanels(panel.panels, `${where}.panels`);
      return;
    }
    const type = panel && typeof panel.type === 'string' ? panel.type : undefined;
    const plugin = type && pluginTypes(type);
    if (!plugin) {
      problems.push(`${where} (${title}): no Grafana types known for panel type ${JSON.stringify(type)}; add it to PANEL_TYPES in gen.mjs`);
      return;
    }
    const custom = plugin.hasFieldConfig ? `${plugin.alias}.FieldConfig` : 'NoCustomFieldConfig';
    declarations.push(
      `${comment}\nexport const ${name}: Json<TypedPanel<${JSON.stringify(type)}, ${plugin.alias}.Options, ${custom}>> = ${JSON.stringify(panel, null, 2)};`,
    );
  });
}

declarePanels(dashboard.panels, 'panels');

if (problems.length > 0) {
  for (const p of problems) {
    console.error(`${input}: ${p}`);
  }
  process.exit(1);
}

const header = `// Generated by dashboards/typecheck/gen.mjs from ${input}. Do not edit.
import type {
  DataQuery,
  DataSourceRef,
  Dashboard,
  FieldConfig,
  FieldConfigSource,
  Panel,
  RowPanel,
} from '@grafana/schema';
${[...imports.values()].map((p) => `import type * as ${p.alias} from '${p.module}';`).join('\n')}

/** A type as JSON spells it: string enums become the union of their string values. */
type Json<T> = T extends string
  ? \`\${T}\`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/**
 * A Prometheus query target: Grafana's common DataQuery plus the fields of Grafana's
 * PrometheusDataQuery kind (the Prometheus plugin's types are not in @grafana/schema).
 */
interface PromQuery extends Omit<DataQuery, 'datasource'> {
  datasource?: DataSourceRef;
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
  expr: string;
  format?: 'time_series' | 'table' | 'heatmap';
  hinting?: boolean;
  instant?: boolean;
  interval?: string;
  intervalFactor?: number;
  legendFormat?: string;
  range?: boolean;
}

/** Panels whose plugin declares no custom field config. */
type NoCustomFieldConfig = Record<string, never>;

/** A panel checked with its own plugin's options and field config. */
type TypedPanel<TType extends string, TOptions, TCustom> = Omit<
  Panel,
  'type' | 'options' | 'fieldConfig' | 'targets'
> & {
  type: TType;
  options: TOptions;
  fieldConfig: {
    defaults: Omit<FieldConfig, 'custom'> & { custom?: TCustom };
    overrides: FieldConfigSource['overrides'];
  };
  targets?: PromQuery[];
};

export const dashboard: Json<Dashboard> = ${JSON.stringify(dashboard, null, 2)};
`;

writeFileSync(output, `${header}\n${declarations.join('\n\n')}\n`);
