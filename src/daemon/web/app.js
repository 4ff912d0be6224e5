// zmixd's dashboard: polls the daemon's JSON API (/api/...) once a second and draws the
// jobs, the selected job's convergence (the panels of `zmix plot`) and the task cache.
// No framework, nothing loaded from elsewhere; every daemon string goes in as text.
'use strict';

const POLL_MS = 1000;
const TASKS_EVERY_MS = 10000;
const JOBS_SHOWN = 50; // finished jobs listed, newest first; unfinished ones always are
const SVG = 'http://www.w3.org/2000/svg';
const SERIES = [['best', 'best so far', '#d62728'], ['elite_mean', 'elite mean', '#1f77b4'],
                ['pop_mean', 'population mean', '#7f7f7f']];
const EXPERT_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b',
                       '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const NAMED_COLORS = {red: '#d62728', green: '#2ca02c', blue: '#1f77b4', gold: '#d4a017',
                      orange: '#ff7f0e', purple: '#9467bd', brown: '#8c564b', pink: '#e377c2',
                      gray: '#7f7f7f', grey: '#7f7f7f', olive: '#bcbd22', cyan: '#17becf'};

const st = {token: sessionStorage.getItem('zmix-token'), selected: null, info: null,
            alphas: new Map(), busy: false, tasksKey: null, tasksAt: 0};

// #token=T (read once, then removed from the address bar) and #job=ID.
(function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get('token')) {
    st.token = h.get('token');
    sessionStorage.setItem('zmix-token', st.token);
    h.delete('token');
    history.replaceState(null, '', location.pathname + (h.toString() ? '#' + h : ''));
  }
  if (h.get('job')) st.selected = Number(h.get('job'));
})();

class AuthError extends Error {}

async function api(path) {
  const headers = st.token ? {Authorization: 'Bearer ' + st.token} : {};
  const r = await fetch(path, {headers, cache: 'no-store'});
  if (r.status === 401) throw new AuthError(await r.text());
  const body = r.headers.get('Content-Type').startsWith('application/json') ?
    await r.json() : {message: await r.text()};
  if (!r.ok) throw new Error(`${path}: ${body.message || r.status}`);
  return body;
}

function el(tag, attrs, ...children) {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) :
    document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x)) ? '–' : x.toFixed(d);
const taskName = (t) => (t.tenant ? t.tenant + '@' : '') + t.task;

function expertColor(name, k) {
  const key = String(name).toLowerCase();
  for (const [n, c] of Object.entries(NAMED_COLORS)) if (key.includes(n)) return c;
  return EXPERT_COLORS[k % EXPERT_COLORS.length];
}

// ---- Jobs ------------------------------------------------------------------------------

function drawJobs(jobs) {
  const body = document.querySelector('#jobs tbody');
  body.replaceChildren();
  for (const j of jobs) {
    const frac = j.max_generations ? Math.min(1, j.generation / j.max_generations) : 0;
    const bar = el('span', {class: 'bar'}, el('span'));
    bar.firstChild.style.width = (100 * frac).toFixed(1) + '%';
    const tr = el('tr', {'data-job': j.job, 'data-state': j.state,
                         'data-generation': j.generation},
      el('td', {class: 'num'}, j.job),
      el('td', {}, taskName(j)),
      el('td', {class: 'state-' + j.state}, j.state),
      el('td', {class: 'progress'}, bar, `${j.generation} / ${j.max_generations}`),
      el('td', {class: 'num'}, fmt(j.best && j.best.accuracy)),
      el('td', {class: 'num'}, fmt(j.best && j.best.loglik)),
      el('td', {class: 'num'}, fmt(j.elapsed, 1)),
      el('td', {}, new Date(j.submitted * 1000).toLocaleTimeString()));
    if (j.job === st.selected) tr.classList.add('selected');
    tr.addEventListener('click', () => { st.selected = j.job; refresh(); });
    body.append(tr);
  }
}

// ---- Charts: the panels of `zmix plot` -------------------------------------------------

const W = 460, H = 250, L = 64, R = 12, T = 28, B = 36;

function ticks(lo, hi, n) {
  const step0 = (hi - lo) / n, p = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

// series: [{name, color, ys, lo?, hi?}] over generations 1..n.
function chart(fig, id, title, ylabel, series, n) {
  let lo = Infinity, hi = -Infinity;
  for (const s of series)
    for (const arr of [s.ys, s.lo || [], s.hi || []])
      for (const y of arr) if (Number.isFinite(y)) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const x = (g) => L + (n > 1 ? (g - 1) / (n - 1) : 0.5) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const svg = el('svg:svg', {id, width: W, height: H + 18 * series.length,
                             viewBox: `0 0 ${W} ${H + 18 * series.length}`,
                             'data-generations': n});
  svg.append(el('svg:text', {x: L, y: 16, class: 'title'}, title));
  for (const t of ticks(lo, hi, 5)) {
    svg.append(el('svg:line', {x1: L, x2: W - R, y1: y(t), y2: y(t), class: 'grid'}));
    svg.append(el('svg:text', {x: L - 4, y: y(t) + 4, 'text-anchor': 'end'},
                  Math.abs(t) >= 100 ? t.toFixed(0) : +t.toPrecision(3)));
  }
  for (const g of n > 1 ? ticks(1, n, Math.min(n - 1, 8)) : [1])
    if (Number.isInteger(g))
      svg.append(el('svg:text', {x: x(g), y: H - B + 14, 'text-anchor': 'middle'}, g));
  svg.append(el('svg:rect', {x: L, y: T, width: W - L - R, height: H - T - B, class: 'axis'}));
  svg.append(el('svg:text', {x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle'},
                'generation'));
  svg.append(el('svg:text', {x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle',
                             transform: `rotate(-90 14 ${(T + H - B) / 2})`}, ylabel));
  series.forEach((s, k) => {
    if (s.lo) {
      const up = s.hi.map((v, i) => `${x(i + 1)},${y(v)}`);
      const down = s.lo.map((v, i) => `${x(i + 1)},${y(v)}`).reverse();
      svg.append(el('svg:polygon', {points: up.concat(down).join(' '), fill: s.color,
                                    'fill-opacity': 0.15, stroke: 'none'}));
    }
    const pts = s.ys.map((v, i) => `${x(i + 1)},${y(v)}`).join(' ');
    svg.append(el('svg:polyline', {points: pts, fill: 'none', stroke: s.color,
                                   'stroke-width': 2, 'data-series': s.name}));
    const ly = H + 12 + 18 * k;
    svg.append(el('svg:line', {x1: L, x2: L + 24, y1: ly - 4, y2: ly - 4, stroke: s.color,
                               'stroke-width': 3}));
    svg.append(el('svg:text', {x: L + 30, y: ly}, s.name));
  });
  fig.replaceChildren(svg);
}

function drawHistory(job, hist) {
  const h = hist.history, n = h.length;
  document.getElementById('detail').hidden = false;
  document.getElementById('detail-title').textContent =
    `Job ${job.job}: ${taskName(job)} (${job.state})`;
  document.getElementById('detail-info').textContent =
    `generation ${job.generation} of ${job.max_generations}, population ${job.pop}, ` +
    `${job.evaluations} evaluations, ${fmt(job.elapsed, 1)} s` +
    (job.stop_reason ? `, stopped: ${job.stop_reason}` : '') +
    (job.reason ? ` — ${job.reason}` : '');
  for (const [metric, title, label] of [['accuracy', 'accuracy per generation', 'accuracy'],
                                        ['loglik', 'log-likelihood per generation',
                                         'mean log-likelihood']]) {
    chart(document.getElementById('chart-' + metric), 'svg-' + metric, title, label,
          SERIES.map(([key, name, color]) => ({name, color, ys: h.map((g) => g[key][metric])})),
          n);
  }
  const dim = n ? h[0].mean.length : 0;
  const experts = (st.info && st.info.experts) || [];
  const series = [];
  for (let i = 0; i < dim; i++) {
    const k = experts.length ? i % experts.length : i;
    const name = dim === experts.length ? experts[i] :
      `α[${i}]` + (experts.length ? ` (${experts[k]})` : '');
    series.push({name: name + ' (mean ± std)', color: expertColor(experts[k] || '', k),
                 ys: h.map((g) => g.mean[i]), lo: h.map((g) => g.mean[i] - g.std[i]),
                 hi: h.map((g) => g.mean[i] + g.std[i])});
  }
  chart(document.getElementById('chart-alpha'), 'svg-alpha',
        'mixing coefficients α: mean ± std per expert', 'α', series, n);
}

// ---- Task cache ------------------------------------------------------------------------

async function drawTasks(list) {
  const body = document.querySelector('#tasks tbody');
  const rows = [];
  for (const t of list.tasks) {
    const name = taskName(t);
    if (!st.alphas.has(t.key)) {
      try {
        const r = await api('/api/tasks/' + encodeURIComponent(name));
        st.alphas.set(t.key, r.alpha || []);
      } catch (e) {
        if (e instanceof AuthError) throw e;
        st.alphas.set(t.key, null);
      }
    }
    const alpha = st.alphas.get(t.key);
    rows.push(el('tr', {'data-task': name},
      el('td', {}, name), el('td', {class: 'num'}, t.job),
      el('td', {class: 'num'}, fmt(t.score.accuracy)),
      el('td', {class: 'num'}, fmt(t.score.loglik)),
      el('td', {class: 'alpha'}, alpha ? '[' + alpha.map((a) => fmt(a, 2)).join(', ') + ']' : '–'),
      el('td', {class: 'num'}, t.bytes),
      el('td', {}, t.current ? 'yes' : 'no: ' + t.mismatch)));
  }
  body.replaceChildren(...rows);
}

// ---- Polling ---------------------------------------------------------------------------

async function refresh() {
  if (st.busy) return;
  st.busy = true;
  const err = document.getElementById('error');
  try {
    if (!st.info) st.info = await api('/api/info');
    const [stats, jobs] = await Promise.all([api('/api/stats'), api('/api/jobs?limit=' + JOBS_SHOWN)]);
    document.getElementById('summary').textContent =
      `zmixd ${st.info.version} · up ${stats.uptime.toFixed(0)} s · workers busy ` +
      `${stats.workers.busy}/${stats.workers.total} · ${stats.evals_per_s.toFixed(0)} ` +
      `evaluations/s · ${stats.queue.running} running, ${stats.queue.queued} queued`;
    if (st.selected === null || !jobs.some((j) => j.job === st.selected)) {
      const running = jobs.find((j) => j.state === 'running');
      st.selected = running ? running.job : (jobs.length ? jobs[0].job : null);
    }
    drawJobs(jobs);
    const job = jobs.find((j) => j.job === st.selected);
    if (job && job.state !== 'queued') {
      try {
        drawHistory(job, await api(`/api/jobs/${job.job}/history`));
      } catch (e) {
        if (e instanceof AuthError) throw e; // a job not started yet has no history
      }
    }
    // The task list costs the daemon's loop about a microsecond per task: fetched when a
    // job ended or the number of tasks changed, else every TASKS_EVERY_MS.
    const tasksKey = `${stats.cache.tasks}/${stats.jobs.done}/${stats.jobs.failed}`;
    if (tasksKey !== st.tasksKey || Date.now() - st.tasksAt > TASKS_EVERY_MS) {
      await drawTasks(await api('/api/tasks'));
      st.tasksKey = tasksKey;
      st.tasksAt = Date.now();
    }
    err.hidden = true;
    document.getElementById('login').hidden = true;
  } catch (e) {
    err.hidden = false;
    err.textContent = e.message;
    if (e instanceof AuthError) document.getElementById('login').hidden = false;
  } finally {
    st.busy = false;
  }
}

document.getElementById('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  st.token = document.getElementById('token').value;
  sessionStorage.setItem('zmix-token', st.token);
  refresh();
});
refresh();
setInterval(refresh, POLL_MS);
