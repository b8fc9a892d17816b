// The stage waterfall of one session, drawn in SVG: a row per stage (by start time, as
// `mailtap show` draws it), its bar from its start over its duration on a time axis scaled to
// the session, the upstream's share of it darker, and the sender's think time before it
// paler. Stage names and times come from the `show --json` document (captures/show.hpp).
import {svg} from './dom.js';
import {duration} from './format.js';

const WIDTH = 960;
const LABEL_WIDTH = 130;
const ROW_HEIGHT = 22;
const BAR_HEIGHT = 14;
const AXIS_HEIGHT = 24;
const TICKS = 4;

export function drawWaterfall(doc) {
  const stages = doc.stages || [];
  const total = Math.max(doc.duration_us || 0, ...stages.map((s) => s.start_us + s.duration_us), 1);
  const plot = WIDTH - LABEL_WIDTH - 10;
  const x = (us) => LABEL_WIDTH + (us / total) * plot;
  const height = AXIS_HEIGHT + stages.length * ROW_HEIGHT + 6;
  const root = svg('svg', {class: 'waterfall', viewBox: `0 0 ${WIDTH} ${height}`, width: WIDTH, height,
    role: 'img', 'aria-label': `stage waterfall, ${stages.length} stages over ${duration(total)}`});

  for (let i = 0; i <= TICKS; i++) {
    const us = (total * i) / TICKS;
    root.append(
      svg('line', {class: 'wf-tick', x1: x(us), x2: x(us), y1: AXIS_HEIGHT - 6, y2: height}),
      svg('text', {class: 'wf-axis', x: x(us), y: AXIS_HEIGHT - 10, 'text-anchor': i === 0 ? 'start' : i === TICKS ? 'end' : 'middle'}, duration(us)));
  }

  stages.forEach((stage, i) => {
    const y = AXIS_HEIGHT + i * ROW_HEIGHT;
    const barY = y + (ROW_HEIGHT - BAR_HEIGHT) / 2;
    const name = stage.leg ? `${stage.name} (${stage.leg})` : stage.name;
    const start = x(stage.start_us);
    const width = Math.max(1, x(stage.start_us + stage.duration_us) - start);
    const upstreamWidth = Math.min(width, (stage.upstream_us / total) * plot);
    const group = svg('g', {class: 'wf-row', 'data-stage': stage.name},
      svg('title', {}, `${name}: ${duration(stage.duration_us)} from ${duration(stage.start_us)}; upstream ${duration(stage.upstream_us)}, relay ${duration(stage.relay_us)}, think ${duration(stage.think_us)}`),
      svg('text', {class: 'wf-label', x: 4, y: y + ROW_HEIGHT / 2 + 4}, name));
    if (stage.think_us > 0) {
      const thinkStart = x(Math.max(0, stage.start_us - stage.think_us));
      group.append(svg('rect', {class: 'wf-think', x: thinkStart, y: barY + BAR_HEIGHT / 3, width: Math.max(0, start - thinkStart), height: BAR_HEIGHT / 3}));
    }
    group.append(svg('rect', {class: 'wf-bar', 'data-stage': stage.name, x: start, y: barY, width, height: BAR_HEIGHT}));
    if (upstreamWidth > 0) group.append(svg('rect', {class: 'wf-upstream', x: start, y: barY, width: upstreamWidth, height: BAR_HEIGHT}));
    root.append(group);
  });
  return root;
}
