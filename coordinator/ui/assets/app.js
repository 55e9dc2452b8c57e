// Dashboard of the dtf coordinator. It reads GET /v1/workers/{id}/timeline,
// GET /v1/tasks and GET /v1/tasks/{id}, and follows the event stream at
// /v1/stream. The stream is read with fetch() rather than EventSource,
// because EventSource cannot send the Authorization header that the API
// needs when api.auth is token.
'use strict';

(() => {
  const TOKEN_KEY = 'dtf-api-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Bounds of what the page loads and draws.
  const MAX_TIMELINES = 200; // workers whose timeline is fetched
  const MAX_TASK_ROWS = 100; // newest tasks listed
  const OUTPUT_TAIL_LINES = 40;
  const TIMELINE_WINDOW_MS = 15 * 60 * 1000;
  const MIN_WINDOW_MS = 20 * 1000;
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 10000;
  const RENDER_INTERVAL_MS = 250; // shortest time between two renders of the stream's changes
  const COLORS = ['#2f6fd0', '#d0542f', '#2e9d5b', '#8a4fd0', '#c9a227', '#1d9aa8', '#c2417c', '#59616b'];
  const TASK_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out'];

  const state = {
    workers: new Map(), // id -> row of GET /v1/workers, with rowTime
    timelines: new Map(), // id -> {events, samples}
    loading: new Set(),
    // Events that arrive while a worker's timeline is being fetched.
    pending: new Map(), // id -> events
    hello: null,
    skewMs: 0, // server clock minus this page's clock
    taskCounts: '',
    tasks: [],
    selectedTask: null,
    streamAbort: null,
  };

  const $ = (id) => document.getElementById(id);

  // ---- API access --------------------------------------------------------

  class AuthError extends Error {}

  function headers() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  async function getJSON(path) {
    const resp = await fetch(path, { headers: headers(), cache: 'no-store' });
    if (resp.status === 401 || resp.status === 403) {
      throw new AuthError(await errorText(resp));
    }
    if (!resp.ok) {
      throw new Error(path + ': ' + resp.status + ' ' + (await errorText(resp)));
    }
    return resp.json();
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      return body.error || resp.statusText;
    } catch (_) {
      return resp.statusText;
    }
  }

  function needToken(message) {
    setStatus('unauthorized', 'token needed');
    $('token-form').hidden = false;
    $('token-error').textContent = sessionStorage.getItem(TOKEN_KEY) ? message : '';
    $('token-input').focus();
  }

  function setStatus(status, text) {
    const el = $('stream-status');
    el.dataset.status = status;
    el.textContent = text;
  }

  // ---- event stream ------------------------------------------------------

  // runStream reads the stream until it ends, then reconnects with a
  // growing delay. An authentication failure waits for a token instead.
  async function runStream() {
    let delay = RETRY_MIN_MS;
    for (;;) {
      const abort = new AbortController();
      state.streamAbort = abort;
      try {
        setStatus('connecting', 'connecting');
        const resp = await fetch('/v1/stream', { headers: headers(), signal: abort.signal, cache: 'no-store' });
        if (resp.status === 401 || resp.status === 403) {
          needToken(await errorText(resp));
          return; // the token form starts the stream again
        }
        if (!resp.ok) {
          const retry = Number(resp.headers.get('Retry-After')) * 1000;
          throw new Error('stream: ' + resp.status + ' ' + (await errorText(resp)), { cause: retry });
        }
        $('token-form').hidden = true;
        $('token-clear').hidden = !sessionStorage.getItem(TOKEN_KEY);
        setStatus('live', 'live');
        delay = RETRY_MIN_MS;
        await readEvents(resp.body);
      } catch (err) {
        if (abort.signal.aborted) {
          return;
        }
        if (err instanceof AuthError) {
          needToken(err.message);
          return;
        }
        if (err.cause > delay) {
          delay = err.cause;
        }
        console.warn('dtf dashboard:', err);
      }
      setStatus('error', 'reconnecting');
      await sleep(delay);
      if (abort.signal.aborted) {
        return; // a newer stream replaced this one
      }
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  function restartStream() {
    if (state.streamAbort) {
      state.streamAbort.abort();
    }
    runStream();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // readEvents parses server-sent events: blocks separated by a blank
  // line, each with an "event:" and a "data:" line.
  async function readEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) {
            name = line.slice(7);
          } else if (line.startsWith('data: ')) {
            data += line.slice(6);
          }
        }
        if (data) {
          handleEvent(name, JSON.parse(data));
        }
      }
    }
  }

  function handleEvent(name, data) {
    switch (name) {
      case 'hello':
        state.hello = data;
        state.skewMs = Date.parse(data.server_time) - Date.now();
        break;
      case 'snapshot':
        applySnapshot(data);
        break;
      case 'worker_event':
        applyWorkerEvent(data);
        break;
      case 'samples':
        applySamples(data);
        break;
    }
  }

  const now = () => Date.now() + state.skewMs;

  function applySnapshot(data) {
    const rowTime = Date.parse(data.time);
    const seen = new Set();
    for (const w of data.workers) {
      w.rowTime = rowTime;
      state.workers.set(w.id, w);
      seen.add(w.id);
      if (!state.timelines.has(w.id) && state.loading.size + state.timelines.size < MAX_TIMELINES) {
        loadTimeline(w.id);
      }
    }
    for (const id of [...state.workers.keys()]) {
      if (!seen.has(id)) {
        state.workers.delete(id);
      }
    }
    renderCounts(data.tasks);
    const counts = JSON.stringify(data.tasks);
    if (counts !== state.taskCounts) {
      state.taskCounts = counts;
      loadTasks();
    }
    scheduleRender({ workers: true });
  }

  function applyWorkerEvent(data) {
    const row = state.workers.get(data.worker_id);
    if (row) {
      row.state = data.state;
      row.connected = data.state === 'connected' || data.state === 'draining';
      row.state_since = data.state_since;
      row.reconnects = data.reconnects;
      row.downtime_ms = data.downtime_ms;
      row.rowTime = Date.parse(data.event.time);
      if (data.event.session_id) {
        row.session_id = data.event.session_id;
      }
    }
    const timeline = state.timelines.get(data.worker_id);
    if (timeline) {
      addEvent(timeline, data.event);
    } else {
      const pending = state.pending.get(data.worker_id) || { events: [] };
      addEvent(pending, data.event);
      state.pending.set(data.worker_id, pending);
      if (!state.loading.has(data.worker_id) && state.timelines.size + state.loading.size < MAX_TIMELINES) {
        loadTimeline(data.worker_id);
      }
    }
    scheduleRender({ workers: true, timeline: true });
  }

  // addEvent appends an event unless the timeline has it already, as when
  // the stream delivers an event that the timeline request also returned.
  function addEvent(timeline, ev) {
    const key = ev.time + ev.state + ev.session_id;
    if (timeline.events.some((e) => e.time + e.state + e.session_id === key)) {
      return;
    }
    timeline.events.push(ev);
    timeline.events.sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
    const limit = (state.hello && state.hello.max_events) || 100;
    if (timeline.events.length > limit) {
      timeline.events.splice(0, timeline.events.length - limit);
    }
  }

  function applySamples(data) {
    const limit = (state.hello && state.hello.max_samples) || 120;
    for (const [id, sample] of Object.entries(data.samples)) {
      const timeline = state.timelines.get(id);
      if (!timeline) {
        continue;
      }
      timeline.samples.push(sample);
      if (timeline.samples.length > limit) {
        timeline.samples.splice(0, timeline.samples.length - limit);
      }
      const row = state.workers.get(id);
      if (row) {
        row.running = sample.running;
        if (sample.rtt_ms > 0) {
          row.rtt_ms = sample.rtt_ms;
        }
      }
    }
    scheduleRender({ workers: true, charts: true });
  }

  async function loadTimeline(id) {
    state.loading.add(id);
    try {
      const t = await getJSON('/v1/workers/' + encodeURIComponent(id) + '/timeline');
      const timeline = { events: t.events || [], samples: t.samples || [] };
      for (const ev of (state.pending.get(id) || { events: [] }).events) {
        addEvent(timeline, ev);
      }
      state.timelines.set(id, timeline);
    } catch (err) {
      if (err instanceof AuthError) {
        needToken(err.message);
        return;
      }
      // A worker without history (404) starts from the events the
      // stream delivered.
      state.timelines.set(id, { events: (state.pending.get(id) || { events: [] }).events, samples: [] });
    } finally {
      state.loading.delete(id);
      state.pending.delete(id);
    }
    scheduleRender({ timeline: true, charts: true });
  }

  // Stream events and timeline loads only mark what changed, and one timer
  // renders it at most every RENDER_INTERVAL_MS. While hundreds of workers
  // connect or resume at once, the stream delivers thousands of events in
  // a few seconds, and rendering the whole table and timeline for each one
  // kept the page busy for 10 s and more.
  const dirty = { workers: false, timeline: false, charts: false };
  let renderTimer = null;

  function scheduleRender(parts) {
    Object.assign(dirty, parts);
    if (renderTimer === null) {
      renderTimer = setTimeout(renderDirty, RENDER_INTERVAL_MS);
    }
  }

  function renderDirty() {
    renderTimer = null;
    const { workers, timeline, charts } = dirty;
    dirty.workers = false;
    dirty.timeline = false;
    dirty.charts = false;
    if (workers) {
      renderWorkers();
    }
    if (timeline) {
      renderTimeline();
    }
    if (charts) {
      renderCharts();
    }
  }

  // ---- workers -----------------------------------------------------------

  // naturalCompare orders worker ids by their numbers: w2 before w10.
  function naturalCompare(a, b) {
    return a.localeCompare(b, undefined, { numeric: true });
  }

  function renderWorkers() {
    const body = $('workers').tBodies[0];
    const ids = [...state.workers.keys()].sort(naturalCompare);
    $('workers-empty').hidden = ids.length > 0;
    const t = now();
    const rows = ids.map((id) => {
      const w = state.workers.get(id);
      let downtime = w.downtime_ms || 0;
      if (w.state === 'disconnected' && w.state_since) {
        downtime += Math.max(0, t - w.rowTime);
      }
      const tr = document.createElement('tr');
      tr.dataset.worker = id;
      tr.dataset.state = w.state;
      tr.append(
        cell('id', id),
        stateCell(w.state),
        cell('since', w.state_since ? ago(t - Date.parse(w.state_since)) : '-', w.state_since),
        cell('rtt', w.rtt_ms ? w.rtt_ms.toFixed(1) + ' ms' : '-', '', true),
        cell('reconnects', String(w.reconnects || 0), '', true),
        cell('downtime', duration(downtime), '', true),
        cell('running', w.running + ' / ' + w.slots, '', true),
        cell('labels', labels(w.labels)),
      );
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function cell(col, text, title, numeric) {
    const td = document.createElement('td');
    td.dataset.col = col;
    td.textContent = text;
    if (title) {
      td.title = title;
    }
    if (numeric) {
      td.className = 'num';
    }
    return td;
  }

  function stateCell(value) {
    const td = document.createElement('td');
    td.dataset.col = 'state';
    const span = document.createElement('span');
    span.className = 'state state-' + value;
    span.textContent = value;
    td.append(span);
    return td;
  }

  function labels(map) {
    return Object.keys(map || {}).sort().map((k) => k + '=' + map[k]).join(', ') || '-';
  }

  function ago(ms) {
    return duration(ms) + ' ago';
  }

  function duration(ms) {
    if (ms < 10000) {
      return (Math.max(0, ms) / 1000).toFixed(1) + 's';
    }
    const s = Math.round(ms / 1000);
    if (s < 60) {
      return s + 's';
    }
    if (s < 3600) {
      return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    }
    return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  // ---- timeline ----------------------------------------------------------

  function svg(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      el.setAttribute(k, v);
    }
    if (text !== undefined) {
      el.textContent = text;
    }
    return el;
  }

  // intervals turns a worker's events into [start, end, state] runs, with
  // runs of the same state merged, up to end.
  function intervals(events, end) {
    const runs = [];
    events.forEach((ev, i) => {
      const start = Date.parse(ev.time);
      const stop = i + 1 < events.length ? Date.parse(events[i + 1].time) : end;
      const last = runs[runs.length - 1];
      if (last && last.state === ev.state) {
        last.end = stop;
      } else {
        runs.push({ start, end: stop, state: ev.state });
      }
    });
    return runs;
  }

  function timeWindow(end) {
    let first = end;
    for (const t of state.timelines.values()) {
      if (t.events.length) {
        first = Math.min(first, Date.parse(t.events[0].time));
      }
    }
    return Math.max(end - TIMELINE_WINDOW_MS, Math.min(first, end - MIN_WINDOW_MS));
  }

  function renderTimeline() {
    const box = $('timeline');
    const ids = [...state.timelines.keys()].sort(naturalCompare);
    const width = Math.max(box.clientWidth, 400);
    const labelWidth = 150;
    const rowHeight = 24;
    const height = ids.length * rowHeight + 24;
    const end = now();
    const start = timeWindow(end);
    const x = (t) => labelWidth + ((t - start) / (end - start)) * (width - labelWidth - 10);
    const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });

    ids.forEach((id, row) => {
      const y = row * rowHeight;
      const events = state.timelines.get(id).events;
      const runs = intervals(events, end).filter((r) => r.end > start);
      const g = svg('g', { 'data-worker': id });
      g.append(svg('text', { x: 0, y: y + 16 }, id));
      let gaps = 0;
      for (const r of runs) {
        const from = x(Math.max(r.start, start));
        const w = Math.max(x(r.end) - from, 1);
        const kind = r.state === 'connected' || r.state === 'draining' ? 'band' : 'gap';
        if (r.state === 'disconnected') {
          gaps++;
        }
        const rect = svg('rect', {
          x: from, y: y + 4, width: w, height: rowHeight - 8,
          class: kind + ' ' + kind + '-' + r.state, 'data-state': r.state,
          'data-start': new Date(r.start).toISOString(), 'data-end': new Date(r.end).toISOString(),
        });
        rect.append(svg('title', {}, r.state + ' from ' + clock(r.start) + ' for ' + duration(r.end - r.start)));
        g.append(rect);
      }
      // A white tick marks each reconnect inside a connected band, such as
      // a resume on a new connection before the old one was seen to die.
      events.forEach((ev, i) => {
        const t = Date.parse(ev.time);
        if (i > 0 && ev.state === 'connected' && events[i - 1].state === 'connected' && t > start) {
          g.append(svg('line', { x1: x(t), x2: x(t), y1: y + 4, y2: y + rowHeight - 4, class: 'mark' }));
        }
      });
      g.dataset.gaps = String(gaps);
      root.append(g);
    });
    appendTimeAxis(root, start, end, x, ids.length * rowHeight + 4, labelWidth, width - 10);
    box.replaceChildren(root);
  }

  function appendTimeAxis(root, start, end, x, y, left, right) {
    root.append(svg('line', { x1: left, x2: right, y1: y, y2: y, class: 'axis' }));
    for (let i = 0; i <= 4; i++) {
      const t = start + ((end - start) * i) / 4;
      let anchor = 'middle';
      if (i === 0) {
        anchor = 'start';
      } else if (i === 4) {
        anchor = 'end';
      }
      root.append(svg('text', { x: x(t), y: y + 14, 'text-anchor': anchor }, clock(t)));
    }
  }

  // ---- charts ------------------------------------------------------------

  function renderCharts() {
    const ids = [...state.timelines.keys()].sort(naturalCompare);
    const color = new Map(ids.map((id, i) => [id, COLORS[i % COLORS.length]]));
    // A round-trip time of 0 means that the worker has no measurement yet,
    // as right after it connects, so it is left out instead of drawn as 0 ms.
    const rtt = (s) => ((s.state === 'connected' || s.state === 'draining') && s.rtt_ms > 0 ? s.rtt_ms : null);
    drawChart($('chart-rtt'), ids, color, rtt);
    drawChart($('chart-reconnects'), ids, color, (s) => s.reconnects);
    const legend = $('chart-legend');
    legend.replaceChildren(...ids.map((id) => {
      const span = document.createElement('span');
      const key = document.createElement('span');
      key.className = 'key';
      key.style.background = color.get(id);
      span.append(key, id);
      return span;
    }));
  }

  // drawChart draws one line per worker of value(sample) over time. A null
  // value breaks the line, so a disconnection shows as a gap.
  function drawChart(box, ids, color, value) {
    const width = Math.max(box.clientWidth, 300);
    const height = 160;
    const left = 44;
    const bottom = height - 20;

    // The axes span the samples of every worker.
    let start = Infinity;
    let end = -Infinity;
    let top = 0;
    for (const id of ids) {
      for (const s of state.timelines.get(id).samples) {
        const t = Date.parse(s.time);
        start = Math.min(start, t);
        end = Math.max(end, t);
        const v = value(s);
        if (v !== null) {
          top = Math.max(top, v);
        }
      }
    }

    const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });
    if (!(end > start)) {
      const every = state.hello ? state.hello.sample_interval_ms / 1000 : 5;
      root.append(svg('text', { x: left, y: height / 2 }, 'collecting samples, one every ' + every + ' s'));
      box.replaceChildren(root);
      return;
    }

    top = niceCeiling(top);
    const x = (t) => left + ((t - start) / (end - start)) * (width - left - 10);
    const y = (v) => bottom - (v / top) * (bottom - 8);
    for (const v of [0, top / 2, top]) {
      root.append(svg('line', { x1: left, x2: width - 10, y1: y(v), y2: y(v), class: 'axis' }));
      root.append(svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatNumber(v)));
    }
    appendTimeAxis(root, start, end, x, bottom, left, width - 10);

    for (const id of ids) {
      let d = '';
      let pen = 'M';
      for (const s of state.timelines.get(id).samples) {
        const v = value(s);
        if (v === null) {
          pen = 'M';
          continue;
        }
        d += pen + x(Date.parse(s.time)).toFixed(1) + ' ' + y(v).toFixed(1) + ' ';
        pen = 'L';
      }
      if (d) {
        root.append(svg('path', { d, class: 'series', stroke: color.get(id), 'data-worker': id }));
      }
    }
    box.replaceChildren(root);
  }

  // niceCeiling rounds a chart's maximum up to 1, 2 or 5 times a power of
  // ten, so the axis labels stay short.
  function niceCeiling(v) {
    if (v <= 0) {
      return 1;
    }
    const power = Math.pow(10, Math.floor(Math.log10(v)));
    for (const step of [1, 2, 5, 10]) {
      if (v <= step * power) {
        return step * power;
      }
    }
    return 10 * power;
  }

  function formatNumber(v) {
    return v >= 10 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1);
  }

  // ---- tasks -------------------------------------------------------------

  function renderCounts(counts) {
    const list = $('task-counts');
    list.replaceChildren(...TASK_STATES.map((s) => {
      const li = document.createElement('li');
      li.dataset.state = s;
      const b = document.createElement('b');
      b.textContent = String(counts[s] || 0);
      li.append(b, ' ' + s);
      return li;
    }));
  }

  async function loadTasks() {
    try {
      const body = await getJSON('/v1/tasks');
      const tasks = body.tasks || [];
      state.tasks = tasks.slice(-MAX_TASK_ROWS).reverse();
      $('tasks-note').textContent = tasks.length > MAX_TASK_ROWS
        ? 'newest ' + MAX_TASK_ROWS + ' of ' + tasks.length : '';
      renderTasks();
      if (state.selectedTask) {
        loadTaskDetail(state.selectedTask);
      }
    } catch (err) {
      if (err instanceof AuthError) {
        needToken(err.message);
      } else {
        console.warn('dtf dashboard:', err);
      }
    }
  }

  function renderTasks() {
    const rows = state.tasks.map((t) => {
      const tr = document.createElement('tr');
      tr.dataset.task = t.id;
      tr.dataset.state = t.state;
      if (t.id === state.selectedTask) {
        tr.className = 'selected';
      }
      const cp = t.checkpoint;
      tr.append(
        cell('id', t.id),
        cell('name', t.name || '-'),
        stateCell(t.state),
        cell('attempt', String(t.attempt), '', true),
        cell('checkpoint', cp ? cp.attempt + '/' + cp.sequence + ' ' + Math.round(cp.fraction * 100) + '%' : '-'),
        cell('worker', t.worker_id || '-'),
      );
      tr.addEventListener('click', () => {
        state.selectedTask = t.id;
        renderTasks();
        loadTaskDetail(t.id);
      });
      return tr;
    });
    $('tasks').tBodies[0].replaceChildren(...rows);
  }

  async function loadTaskDetail(id) {
    let task;
    try {
      task = await getJSON('/v1/tasks/' + encodeURIComponent(id));
    } catch (err) {
      $('task-outcome').textContent = err.message;
      return;
    }
    $('task-detail').hidden = false;
    $('task-detail').dataset.task = task.id;
    $('task-detail-title').textContent = task.id + (task.name ? ' ' + task.name : '') + ': ' + task.state;
    const o = task.outcome;
    let outcome = task.queued_reason || 'No outcome yet.';
    if (o) {
      const exit = 'exit code ' + o.exit_code;
      outcome = 'Outcome of attempt ' + o.attempt + ' on ' + o.worker_id + ': ' + o.status + ', ' + exit +
        (o.message && o.message !== exit ? ', ' + o.message : '');
    }
    $('task-outcome').textContent = outcome;
    const rows = (task.attempts || []).map((a) => {
      const tr = document.createElement('tr');
      tr.append(
        cell('attempt', String(a.attempt), '', true),
        cell('worker', a.worker_id),
        stateCell(a.state),
        cell('started', clock(Date.parse(a.started))),
        cell('ended', a.ended ? clock(Date.parse(a.ended)) : '-'),
        cell('reason', a.reason || ''),
      );
      return tr;
    });
    $('task-attempts').tBodies[0].replaceChildren(...rows);
    const lines = ((o && o.output) || '').split('\n');
    $('task-output').textContent = lines.slice(-OUTPUT_TAIL_LINES).join('\n') || '(no output)';
  }

  // ---- start -------------------------------------------------------------

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) {
      $('token-error').textContent = 'Enter a token.';
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token-input').value = '';
    restartStream();
  });

  $('token-clear').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-clear').hidden = true;
    restartStream();
  });

  // Times and the timeline move on between events.
  setInterval(() => {
    renderWorkers();
    renderTimeline();
  }, 1000);
  window.addEventListener('resize', () => {
    renderTimeline();
    renderCharts();
  });

  renderCounts({});
  renderWorkers();
  runStream();
})();
