/* jobrunner dashboard: plain JavaScript, no framework, no build step.
 *
 * Served by the producer at /dashboard (embedded in the binary).  Talks to
 * the producer's own API with the session cookie (never with the token:
 * the login form hands the token to POST /dashboard/login once and forgets
 * it).  Every state-changing request carries X-CSRF-Token, which lives in
 * this script's memory only.  All text from the data is put into the page
 * with textContent / createTextNode, never as HTML.
 *
 * Pages (the URL fragment): #/ overview (GET .../stats every 2 s),
 * #/runs (search), #/run/<id>, #/dead, #/jobs.
 */
'use strict';

(function () {
  const API = '/api/integrations/jobs';
  const REFRESH_MS = 2000;
  const STATUSES = ['queued', 'delayed', 'running', 'succeeded', 'failed', 'dead', 'cancelled'];

  /* ---------------------------------------------------------------- */
  /* text                                                              */
  /* ---------------------------------------------------------------- */

  const T = {
    en: {
      'nav.overview': 'Overview', 'nav.runs': 'Runs', 'nav.dead': 'Dead runs', 'nav.jobs': 'Jobs',
      lang: 'Language', logout: 'Log out', cancel: 'Cancel', confirm: 'Confirm',
      'login.title': 'Sign in', 'login.token': 'API token', 'login.submit': 'Sign in',
      'login.hint': 'The token is exchanged for a session cookie and is not stored by the page.',
      'login.wrong': 'Wrong token.', 'login.limited': 'Too many attempts; try again in {s} s.',
      'login.failed': 'Sign-in failed ({s}).',
      'ov.title': 'Overview', 'ov.queue': 'Queue', 'ov.health': 'Health', 'ov.chart': 'Finished runs per {step}, last {window}',
      'ov.jobs': 'Jobs', 'ov.consumers': 'Consumers', 'ov.updated': 'Updated {t}', 'ov.lock': 'Cycle lock',
      'ov.nolock': 'free', 'ov.noconsumers': 'No consumer is connected.',
      queued: 'queued', delayed: 'delayed', running: 'running', dead: 'dead', succeeded: 'succeeded',
      failed: 'failed', cancelled: 'cancelled', other: 'other',
      'h.database': 'PostgreSQL', 'h.redis': 'Redis', 'h.ok': 'ok', 'h.down': 'down', 'h.off': 'not used',
      'job.name': 'Job', 'job.state': 'State', 'job.interval': 'Interval', 'job.last': 'Last run',
      'job.next': 'Next due', 'job.window': 'Last hour', 'job.enabled': 'enabled', 'job.disabled': 'disabled',
      'job.paused': 'paused', 'job.adhoc': 'on demand', 'job.pause': 'Pause', 'job.resume': 'Resume',
      'job.runnow': 'Run now', 'job.org': 'org (optional)', 'job.enqueued': 'Run {id} enqueued.',
      'job.pausedmsg': '{job} paused.', 'job.resumedmsg': '{job} resumed.',
      'c.name': 'Consumer', 'c.pending': 'Runs in hand', 'c.idle': 'Idle', 'c.lock': 'Holds the cycle lock',
      'runs.title': 'Runs', 'f.job': 'Job', 'f.org': 'Org', 'f.status': 'Status', 'f.since': 'Since',
      'f.until': 'Until', 'f.any': 'any', 'f.apply': 'Search', 'f.reset': 'Reset',
      'r.id': 'Run', 'r.job': 'Job', 'r.org': 'Org', 'r.status': 'Status', 'r.attempts': 'Attempts',
      'r.enqueued': 'Enqueued', 'r.started': 'Started', 'r.finished': 'Finished', 'r.duration': 'Duration',
      'r.consumer': 'Consumer', 'r.error': 'Error', 'r.payload': 'Payload', 'r.source': 'Source',
      'r.none': 'No runs match.', 'r.next': 'Next page', 'r.first': 'First page',
      'r.cancel': 'Cancel run', 'r.retry': 'Retry', 'r.cancelq': 'Cancel run {id}?',
      'r.retryq': 'Retry run {id}?', 'r.cancelled': 'Cancellation requested.', 'r.retried': 'Run queued again.',
      'r.notfound': 'No run with this id.', 'r.back': 'Back to runs',
      'r.nosearch': 'This producer has no run search (GET /runs); open a run by id:',
      'r.open': 'Open',
      'dead.title': 'Dead runs', 'dead.retryall': 'Retry all that match', 'dead.retryallq': 'Queue again every dead run that matches (job: {job}, org: {org})?',
      'dead.retriedall': '{n} runs queued again.', 'dead.none': 'No dead runs.',
      'err.generic': 'Request failed: {s}', 'err.session': 'The session ended; sign in again.',
      'jobs.title': 'Jobs', 'all': 'all',
    },
    es: {
      'nav.overview': 'Resumen', 'nav.runs': 'Ejecuciones', 'nav.dead': 'Ejecuciones muertas', 'nav.jobs': 'Trabajos',
      lang: 'Idioma', logout: 'Cerrar sesión', cancel: 'Cancelar', confirm: 'Confirmar',
      'login.title': 'Iniciar sesión', 'login.token': 'Token de la API', 'login.submit': 'Entrar',
      'login.hint': 'El token se cambia por una cookie de sesión; la página no lo guarda.',
      'login.wrong': 'Token incorrecto.', 'login.limited': 'Demasiados intentos; vuelve a probar en {s} s.',
      'login.failed': 'No se pudo iniciar sesión ({s}).',
      'ov.title': 'Resumen', 'ov.queue': 'Cola', 'ov.health': 'Salud', 'ov.chart': 'Ejecuciones terminadas por {step}, últimos {window}',
      'ov.jobs': 'Trabajos', 'ov.consumers': 'Consumidores', 'ov.updated': 'Actualizado {t}', 'ov.lock': 'Bloqueo del ciclo',
      'ov.nolock': 'libre', 'ov.noconsumers': 'No hay consumidores conectados.',
      queued: 'en cola', delayed: 'diferida', running: 'en curso', dead: 'muerta', succeeded: 'correcta',
      failed: 'fallida', cancelled: 'cancelada', other: 'otro',
      'h.database': 'PostgreSQL', 'h.redis': 'Redis', 'h.ok': 'bien', 'h.down': 'caído', 'h.off': 'no se usa',
      'job.name': 'Trabajo', 'job.state': 'Estado', 'job.interval': 'Intervalo', 'job.last': 'Última ejecución',
      'job.next': 'Próxima', 'job.window': 'Última hora', 'job.enabled': 'activo', 'job.disabled': 'desactivado',
      'job.paused': 'en pausa', 'job.adhoc': 'a demanda', 'job.pause': 'Pausar', 'job.resume': 'Reanudar',
      'job.runnow': 'Ejecutar ahora', 'job.org': 'org (opcional)', 'job.enqueued': 'Ejecución {id} en cola.',
      'job.pausedmsg': '{job} en pausa.', 'job.resumedmsg': '{job} reanudado.',
      'c.name': 'Consumidor', 'c.pending': 'Ejecuciones en mano', 'c.idle': 'Inactivo', 'c.lock': 'Tiene el bloqueo del ciclo',
      'runs.title': 'Ejecuciones', 'f.job': 'Trabajo', 'f.org': 'Org', 'f.status': 'Estado', 'f.since': 'Desde',
      'f.until': 'Hasta', 'f.any': 'cualquiera', 'f.apply': 'Buscar', 'f.reset': 'Limpiar',
      'r.id': 'Ejecución', 'r.job': 'Trabajo', 'r.org': 'Org', 'r.status': 'Estado', 'r.attempts': 'Intentos',
      'r.enqueued': 'Encolada', 'r.started': 'Iniciada', 'r.finished': 'Terminada', 'r.duration': 'Duración',
      'r.consumer': 'Consumidor', 'r.error': 'Error', 'r.payload': 'Carga', 'r.source': 'Origen',
      'r.none': 'Ninguna ejecución coincide.', 'r.next': 'Página siguiente', 'r.first': 'Primera página',
      'r.cancel': 'Cancelar ejecución', 'r.retry': 'Reintentar', 'r.cancelq': '¿Cancelar la ejecución {id}?',
      'r.retryq': '¿Reintentar la ejecución {id}?', 'r.cancelled': 'Cancelación pedida.', 'r.retried': 'Ejecución en cola otra vez.',
      'r.notfound': 'No hay ninguna ejecución con este id.', 'r.back': 'Volver a ejecuciones',
      'r.nosearch': 'Este productor no tiene búsqueda de ejecuciones (GET /runs); abre una por id:',
      'r.open': 'Abrir',
      'dead.title': 'Ejecuciones muertas', 'dead.retryall': 'Reintentar todas las que coinciden', 'dead.retryallq': '¿Volver a encolar todas las ejecuciones muertas que coinciden (trabajo: {job}, org: {org})?',
      'dead.retriedall': '{n} ejecuciones en cola otra vez.', 'dead.none': 'No hay ejecuciones muertas.',
      'err.generic': 'La petición falló: {s}', 'err.session': 'La sesión terminó; vuelve a iniciarla.',
      'jobs.title': 'Trabajos', 'all': 'todos',
    },
  };

  let lang = 'en';
  let csrf = null;
  let timer = null;
  let gen = 0;             /* bumped on every page change: stale answers are dropped */
  let jobNames = [];

  function t(key, vars) {
    let s = (T[lang] && T[lang][key]) || T.en[key] || key;
    if (vars) for (const k of Object.keys(vars)) s = s.split('{' + k + '}').join(String(vars[k]));
    return s;
  }

  /* ---------------------------------------------------------------- */
  /* DOM helpers: text only, never HTML                                */
  /* ---------------------------------------------------------------- */

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
        else if (k === 'class') el.className = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.appendChild(typeof kid === 'object' ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const $ = (id) => document.getElementById(id);

  function badge(status) {
    return h('span', { class: 'badge s-' + String(status).replace(/[^a-z]/g, '') }, t(status));
  }

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toLocaleString(lang === 'es' ? 'es-ES' : 'en-GB', { hour12: false });
  }

  function fmtDur(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    if (ms < 3600000) return Math.round(ms / 60000) + ' min';
    if (ms < 86400000) return (ms / 3600000).toFixed(1).replace(/\.0$/, '') + ' h';
    return (ms / 86400000).toFixed(1).replace(/\.0$/, '') + ' d';
  }

  function note(text, bad) {
    const n = $('flash');
    if (!n) return;
    n.textContent = text;
    n.className = bad ? 'note bad' : 'note';
    n.hidden = false;
  }

  function confirmBox(text) {
    return new Promise((resolve) => {
      const box = $('confirm');
      $('confirm-text').textContent = text;
      box.hidden = false;
      const done = (v) => {
        box.hidden = true;
        $('confirm-yes').removeEventListener('click', yes);
        $('confirm-no').removeEventListener('click', no);
        resolve(v);
      };
      const yes = () => done(true);
      const no = () => done(false);
      $('confirm-yes').addEventListener('click', yes);
      $('confirm-no').addEventListener('click', no);
      $('confirm-yes').focus();
    });
  }

  /* ---------------------------------------------------------------- */
  /* the API                                                           */
  /* ---------------------------------------------------------------- */

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code || String(status));
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const opt = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') opt.headers['X-CSRF-Token'] = csrf || '';
    if (body !== undefined) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    const r = await fetch(path, opt);
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (r.status === 401) {
      showLogin(t('err.session'));
      throw new ApiError(401, 'unauthorized', t('err.session'));
    }
    if (!r.ok) {
      const e = j && j.error ? j.error : {};
      throw new ApiError(r.status, e.code, e.message || ('HTTP ' + r.status));
    }
    return j;
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
    const s = u.toString();
    return s ? '?' + s : '';
  }

  /* ---------------------------------------------------------------- */
  /* session                                                           */
  /* ---------------------------------------------------------------- */

  function applyLang() {
    document.documentElement.lang = lang;
    $('lang').value = lang;
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.getAttribute('data-i18n'));
  }

  function showLogin(message) {
    stopTimer();
    csrf = null;
    $('nav').hidden = true;
    $('logout').hidden = true;
    $('view').replaceChildren();
    $('login').hidden = false;
    const err = $('login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('token').focus();
  }

  function showApp() {
    $('login').hidden = true;
    $('nav').hidden = false;
    $('logout').hidden = false;
    route();
  }

  async function login(ev) {
    ev.preventDefault();
    const input = $('token');
    const token = input.value;
    input.value = '';
    const r = await fetch('/dashboard/login', {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token }),
    });
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (r.ok && j && j.csrf) {
      csrf = j.csrf;
      showApp();
      return;
    }
    const err = $('login-error');
    err.hidden = false;
    if (r.status === 401) err.textContent = t('login.wrong');
    else if (r.status === 429) err.textContent = t('login.limited', { s: r.headers.get('Retry-After') || '60' });
    else err.textContent = t('login.failed', { s: (j && j.error && j.error.message) || r.status });
  }

  async function logout() {
    try {
      await fetch('/dashboard/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': csrf || '' } });
    } finally {
      showLogin('');
    }
  }

  /* ---------------------------------------------------------------- */
  /* routing                                                           */
  /* ---------------------------------------------------------------- */

  function stopTimer() {
    if (timer) clearTimeout(timer);
    timer = null;
    gen++;
  }

  function every(fn) {
    const my = gen;
    const tick = async () => {
      if (my !== gen) return;
      try { await fn(my); } catch (e) { if (!(e instanceof ApiError && e.status === 401)) showError(e); }
      if (my === gen) timer = setTimeout(tick, REFRESH_MS);
    };
    tick();
  }

  function showError(e) {
    note(t('err.generic', { s: e && e.message ? e.message : String(e) }), true);
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const q = raw.indexOf('?');
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const params = Object.fromEntries(new URLSearchParams(q >= 0 ? raw.slice(q + 1) : ''));
    return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params };
  }

  function route() {
    if (!csrf) return;
    stopTimer();
    const { parts, params } = parseHash();
    const page = parts[0] || 'overview';
    for (const a of document.querySelectorAll('#nav a')) {
      const p = a.getAttribute('data-page');
      a.classList.toggle('active', p === page || (p === 'runs' && page === 'run'));
    }
    const view = $('view');
    view.replaceChildren(h('div', { id: 'flash', class: 'note', hidden: true }));
    if (page === 'runs') pageRuns(view, params);
    else if (page === 'run' && parts[1]) pageRun(view, parts[1]);
    else if (page === 'dead') pageDead(view, params);
    else if (page === 'jobs') pageJobs(view);
    else pageOverview(view);
  }

  /* ---------------------------------------------------------------- */
  /* overview                                                          */
  /* ---------------------------------------------------------------- */

  function pageOverview(view) {
    const updated = h('p', { class: 'muted', id: 'ov-updated' });
    const body = h('div', { id: 'ov-body' });
    view.append(h('h1', null, t('ov.title')), updated, body);
    every(async (my) => {
      const s = await api('GET', API + '/stats?window=1h&step=1m');
      if (my !== gen) return;
      jobNames = s.jobs.map((j) => j.name);
      updated.textContent = t('ov.updated', { t: fmtTime(s.generatedAt) });
      body.replaceChildren(...renderOverview(s));
    });
  }

  function healthRow(name, c) {
    let state;
    if (c.configured === false) state = h('span', { class: 'badge' }, t('h.off'));
    else state = h('span', { class: 'badge ' + (c.ok ? 's-ok' : 's-down') }, t(c.ok ? 'h.ok' : 'h.down'));
    return [h('dt', null, t(name)), h('dd', null, state, ' ',
      c.configured === false ? '' : h('span', { class: 'muted' }, c.latencyMs + ' ms'),
      c.ok ? '' : h('span', { class: 'error' }, ' ', c.error || ''))];
  }

  function renderOverview(s) {
    const q = s.queue;
    const queue = h('div', { class: 'card', id: 'ov-queue' }, h('h2', null, t('ov.queue'), ' ', h('span', { class: 'muted' }, q.backend)),
      h('div', { class: 'big' }, ['queued', 'delayed', 'running', 'dead'].map((k) =>
        h('div', { 'data-k': k }, h('b', null, q[k]), h('span', null, t(k))))),
      q.error ? h('p', { class: 'error' }, q.error) : null);
    const lock = s.cycleLock;
    const health = h('div', { class: 'card', id: 'ov-health' }, h('h2', null, t('ov.health')),
      h('dl', { class: 'kv' }, healthRow('h.database', s.health.database), healthRow('h.redis', s.health.redis),
        h('dt', null, t('ov.lock')), h('dd', null, lock ? h('span', { class: 'mono' }, lock.holder) : h('span', { class: 'muted' }, t('ov.nolock')))));

    const chart = h('div', { class: 'card' }, h('h2', null, t('ov.chart', { step: s.step, window: s.window })),
      drawChart(s.series), legend());

    const jobs = h('table', { id: 'ov-jobs' }, h('thead', null, h('tr', null,
      h('th', null, t('job.name')), h('th', null, t('job.state')), h('th', null, t('job.interval')),
      h('th', null, t('job.last')), h('th', null, t('job.next')), h('th', null, t('job.window')))),
      h('tbody', null, s.jobs.map((j) => h('tr', { 'data-job': j.name },
        h('td', { class: 'mono' }, j.name),
        h('td', null, jobState(j)),
        h('td', null, j.intervalMs ? fmtDur(j.intervalMs) : t('job.adhoc')),
        h('td', null, j.lastRunAt ? [fmtTime(j.lastRunAt), ' · ', fmtDur(j.lastRunDurationMs), ' ', j.lastStatus ? badge(j.lastStatus) : ''] : '—'),
        h('td', null, fmtTime(j.nextDueAt)),
        h('td', null, windowCounts(j.window))))));

    const cons = s.consumers.length ? h('table', { id: 'ov-consumers' }, h('thead', null, h('tr', null,
      h('th', null, t('c.name')), h('th', { class: 'num' }, t('c.pending')), h('th', { class: 'num' }, t('c.idle')), h('th', null, t('c.lock')))),
      h('tbody', null, s.consumers.map((c) => h('tr', null, h('td', { class: 'mono' }, c.name),
        h('td', { class: 'num' }, c.pending), h('td', { class: 'num' }, fmtDur(c.idleMs)),
        h('td', null, c.holdsCycleLock ? '✔' : '')))))
      : h('p', { class: 'muted' }, t('ov.noconsumers'));

    return [h('div', { class: 'grid' }, queue, health), chart,
      h('div', { class: 'card' }, h('h2', null, t('ov.jobs')), jobs),
      h('div', { class: 'card' }, h('h2', null, t('ov.consumers')), cons)];
  }

  function jobState(j) {
    const out = [h('span', { class: 'badge ' + (j.enabled ? 's-ok' : '') }, t(j.enabled ? 'job.enabled' : 'job.disabled'))];
    if (j.paused) out.push(' ', h('span', { class: 'badge s-paused' }, t('job.paused')));
    return out;
  }

  function windowCounts(w) {
    const keys = Object.keys(w || {});
    if (!keys.length) return h('span', { class: 'muted' }, '0');
    return keys.map((k) => h('span', { class: 'inline' }, badge(k), ' ', w[k], ' '));
  }

  const CHART_KEYS = ['succeeded', 'failed', 'dead', 'cancelled'];

  function legend() {
    return h('div', { class: 'legend' }, CHART_KEYS.concat(['other']).map((k) => h('span', null, h('i', { class: 'l-' + k }), t(k))));
  }

  /* Stacked bars, one per step, drawn as SVG rectangles. */
  function drawChart(series) {
    const NS = 'http://www.w3.org/2000/svg';
    const W = 1000, H = 220, L = 36, B = 18, TOP = 6;
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('class', 'chart');
    svg.setAttribute('role', 'img');
    const el = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    const b = series.buckets;
    const totals = b.map((x) => Object.entries(x).filter(([k]) => k !== 't').reduce((a, [, v]) => a + v, 0));
    const max = Math.max(1, ...totals);
    const plotH = H - B - TOP, bw = (W - L) / Math.max(1, b.length);
    el('line', { x1: L, y1: H - B, x2: W, y2: H - B, class: 'axis' });
    el('line', { x1: L, y1: TOP, x2: L, y2: H - B, class: 'axis' });
    el('text', { x: L - 4, y: TOP + 8, 'text-anchor': 'end' }, String(max));
    el('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, '0');
    b.forEach((x, i) => {
      let y = H - B;
      const keys = Object.keys(x).filter((k) => k !== 't');
      keys.sort((p, q) => CHART_KEYS.indexOf(p) - CHART_KEYS.indexOf(q));
      for (const k of keys) {
        const hgt = (x[k] / max) * plotH;
        y -= hgt;
        const r = el('rect', { x: L + i * bw + 0.5, y, width: Math.max(1, bw - 1), height: hgt,
          class: 'c-' + (CHART_KEYS.includes(k) ? k : 'other') });
        const title = document.createElementNS(NS, 'title');
        title.textContent = fmtTime(x.t) + ' · ' + t(k) + ': ' + x[k];
        r.appendChild(title);
      }
      if (i % 10 === 0) {
        const d = new Date(x.t);
        el('text', { x: L + i * bw, y: H - 4 }, isNaN(d) ? '' : d.toLocaleTimeString(lang === 'es' ? 'es-ES' : 'en-GB', { hour: '2-digit', minute: '2-digit', hour12: false }));
      }
    });
    return svg;
  }

  /* ---------------------------------------------------------------- */
  /* runs                                                              */
  /* ---------------------------------------------------------------- */

  function jobSelect(name, value) {
    return h('select', { name }, h('option', { value: '' }, t('f.any')),
      jobNames.map((j) => h('option', { value: j, selected: j === value }, j)));
  }

  function runsTable(runs, opts) {
    return h('table', { id: opts.id }, h('thead', null, h('tr', null,
      h('th', null, t('r.id')), h('th', null, t('r.job')), h('th', null, t('r.org')), h('th', null, t('r.status')),
      h('th', { class: 'num' }, t('r.attempts')), h('th', null, t('r.enqueued')), h('th', null, t('r.finished')),
      opts.error ? h('th', null, t('r.error')) : null, opts.actions ? h('th', null, '') : null)),
      h('tbody', null, runs.map((r) => h('tr', { 'data-run': r.id },
        h('td', { class: 'mono' }, h('a', { href: '#/run/' + encodeURIComponent(r.id) }, r.id)),
        h('td', { class: 'mono' }, r.job), h('td', { class: 'mono' }, r.orgId || '—'), h('td', null, badge(r.status)),
        h('td', { class: 'num' }, r.attempts), h('td', null, fmtTime(r.enqueuedAt)), h('td', null, fmtTime(r.finishedAt)),
        opts.error ? h('td', { class: 'mono' }, r.error || '') : null,
        opts.actions ? h('td', null, opts.actions(r)) : null))));
  }

  async function ensureJobNames() {
    if (jobNames.length) return;
    const s = await api('GET', API + '/stats?window=1h&step=1m');
    jobNames = s.jobs.map((j) => j.name);
  }

  function filterForm(params, fields, onSubmit) {
    const form = h('form', { class: 'filters', id: 'filters' },
      fields.includes('job') ? h('label', null, t('f.job'), jobSelect('job', params.job)) : null,
      fields.includes('orgId') ? h('label', null, t('f.org'), h('input', { name: 'orgId', value: params.orgId || '', size: 14 })) : null,
      fields.includes('status') ? h('label', null, t('f.status'), h('select', { name: 'status' }, h('option', { value: '' }, t('f.any')),
        STATUSES.map((s) => h('option', { value: s, selected: s === params.status }, t(s))))) : null,
      fields.includes('since') ? h('label', null, t('f.since'), h('input', { name: 'since', type: 'datetime-local', value: toLocalInput(params.since) })) : null,
      fields.includes('until') ? h('label', null, t('f.until'), h('input', { name: 'until', type: 'datetime-local', value: toLocalInput(params.until) })) : null,
      h('button', { type: 'submit', class: 'primary' }, t('f.apply')),
      h('button', { type: 'button', onclick: () => onSubmit({}) }, t('f.reset')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const out = {};
      for (const [k, v] of new FormData(form).entries()) {
        if (!v) continue;
        out[k] = (k === 'since' || k === 'until') ? new Date(v).toISOString() : v;
      }
      onSubmit(out);
    });
    return form;
  }

  function toLocalInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return '';
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes());
  }

  function openById() {
    const input = h('input', { name: 'id', size: 38, class: 'mono', id: 'open-id' });
    const form = h('form', { class: 'filters' }, h('label', null, t('r.id'), input), h('button', { type: 'submit' }, t('r.open')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (input.value.trim()) location.hash = '#/run/' + encodeURIComponent(input.value.trim());
    });
    return form;
  }

  async function pageRuns(view, params) {
    view.append(h('h1', null, t('runs.title')));
    try { await ensureJobNames(); } catch (e) { showError(e); }
    view.append(filterForm(params, ['job', 'orgId', 'status', 'since', 'until'], (p) => { location.hash = '#/runs' + qs(p); }));
    const out = h('div', { id: 'runs-body' });
    view.append(out);
    const search = { job: params.job, orgId: params.orgId, status: params.status, since: params.since,
      until: params.until, cursor: params.cursor, limit: 50 };
    const draw = async (my) => {
      let res;
      try {
        res = await api('GET', API + '/runs' + qs(search));
      } catch (e) {
        if (e.status === 404 || e.status === 405) {
          out.replaceChildren(h('p', { class: 'note' }, t('r.nosearch')), openById());
          stopTimer();
          return;
        }
        throw e;
      }
      if (my !== gen) return;
      const runs = res.runs || [];
      const pager = h('div', { class: 'pager' },
        params.cursor ? h('a', { href: '#/runs' + qs(Object.assign({}, params, { cursor: undefined })) }, t('r.first')) : null,
        res.nextCursor ? h('a', { id: 'next-page', href: '#/runs' + qs(Object.assign({}, params, { cursor: res.nextCursor })) }, t('r.next')) : null);
      out.replaceChildren(runs.length ? runsTable(runs, { id: 'runs' }) : h('p', { class: 'muted' }, t('r.none')), pager);
    };
    /* the first page follows new runs; a later page stays still */
    if (params.cursor) draw(gen).catch(showError);
    else every(draw);
  }

  async function pageRun(view, id) {
    const out = h('div', { id: 'run-body' });
    view.append(h('p', null, h('a', { href: '#/runs' }, '← ' + t('r.back'))), h('h1', { class: 'mono' }, id), out);
    every(async (my) => {
      let r;
      try {
        r = await api('GET', API + '/runs/' + encodeURIComponent(id));
      } catch (e) {
        if (e.status === 404) {
          out.replaceChildren(h('p', { class: 'note bad' }, t('r.notfound')));
          return;
        }
        throw e;
      }
      if (my !== gen) return;
      out.replaceChildren(...renderRun(r));
    });
  }

  function renderRun(r) {
    const actions = h('div', { class: 'actions' });
    if (['queued', 'delayed', 'running', 'failed'].includes(r.status)) {
      actions.append(h('button', { id: 'cancel-run', class: 'danger', onclick: async () => {
        if (!await confirmBox(t('r.cancelq', { id: r.id }))) return;
        try {
          await api('POST', API + '/runs/' + encodeURIComponent(r.id) + '/cancel');
          note(t('r.cancelled'));
        } catch (e) { showError(e); }
      } }, t('r.cancel')));
    }
    if (r.status === 'dead') actions.append(retryButton(r));
    const kv = (k, v) => [h('dt', null, t(k)), h('dd', null, v)];
    return [
      h('div', { class: 'card' }, actions,
        h('dl', { class: 'kv', id: 'run-fields' },
          kv('r.status', h('span', { id: 'run-status', 'data-status': r.status }, badge(r.status))),
          kv('r.job', h('span', { class: 'mono' }, r.job)),
          kv('r.org', h('span', { class: 'mono' }, r.orgId || '—')),
          kv('r.source', r.source || '—'),
          kv('r.attempts', (r.attempts ?? '—') + (r.maxAttempts ? ' / ' + r.maxAttempts : '')),
          kv('r.enqueued', fmtTime(r.enqueuedAt)),
          kv('r.started', fmtTime(r.startedAt)),
          kv('r.finished', fmtTime(r.finishedAt)),
          kv('r.duration', fmtDur(r.durationMs)),
          kv('r.consumer', h('span', { class: 'mono' }, r.consumer || '—')))),
      r.error ? h('div', { class: 'card' }, h('h2', null, t('r.error')), h('pre', { id: 'run-error' }, r.error)) : null,
      h('div', { class: 'card' }, h('h2', null, t('r.payload')), h('pre', { id: 'run-payload' }, JSON.stringify(r.payload, null, 2))),
    ].filter(Boolean);
  }

  function retryButton(r) {
    return h('button', { class: 'primary retry-run', 'data-run': r.id, onclick: async () => {
      if (!await confirmBox(t('r.retryq', { id: r.id }))) return;
      try {
        await api('POST', API + '/dead/' + encodeURIComponent(r.id) + '/retry');
        route();
        note(t('r.retried'));
      } catch (e) { showError(e); }
    } }, t('r.retry'));
  }

  /* ---------------------------------------------------------------- */
  /* dead runs                                                         */
  /* ---------------------------------------------------------------- */

  async function pageDead(view, params) {
    view.append(h('h1', null, t('dead.title')));
    try { await ensureJobNames(); } catch (e) { showError(e); }
    view.append(filterForm(params, ['job', 'orgId', 'since'], (p) => { location.hash = '#/dead' + qs(p); }));
    const all = h('button', { id: 'retry-all', class: 'danger', onclick: async () => {
      if (!await confirmBox(t('dead.retryallq', { job: params.job || t('all'), org: params.orgId || t('all') }))) return;
      try {
        const body = {};
        for (const k of ['job', 'orgId', 'since']) if (params[k]) body[k] = params[k];
        const res = await api('POST', API + '/dead/retry', body);
        const n = res.retried ?? res.count ?? res.requeued ?? (res.ids ? res.ids.length : '?');
        route();
        note(t('dead.retriedall', { n }));
      } catch (e) { showError(e); }
    } }, t('dead.retryall'));
    const out = h('div', { id: 'dead-body' });
    view.append(h('div', { class: 'actions' }, all), out);
    every(async (my) => {
      const res = await api('GET', API + '/dead' + qs({ limit: 200, job: params.job, orgId: params.orgId, since: params.since }));
      if (my !== gen) return;
      /* the list answer may not filter: filter here as well */
      const runs = (res.runs || []).filter((r) => (!params.job || r.job === params.job) &&
        (!params.orgId || r.orgId === params.orgId) &&
        (!params.since || !r.finishedAt || r.finishedAt >= params.since));
      out.replaceChildren(runs.length ? runsTable(runs, { id: 'dead', error: true, actions: retryButton }) : h('p', { class: 'muted' }, t('dead.none')));
    });
  }

  /* ---------------------------------------------------------------- */
  /* jobs                                                              */
  /* ---------------------------------------------------------------- */

  function pageJobs(view) {
    const out = h('div', { id: 'jobs-body' });
    view.append(h('h1', null, t('jobs.title')), out);
    const orgs = {};
    every(async (my) => {
      const s = await api('GET', API + '/stats?window=1h&step=1m');
      if (my !== gen) return;
      jobNames = s.jobs.map((j) => j.name);
      /* keep what is being typed into the org fields across refreshes */
      for (const inp of out.querySelectorAll('input[data-org]')) orgs[inp.getAttribute('data-org')] = inp.value;
      out.replaceChildren(h('table', { id: 'jobs' }, h('thead', null, h('tr', null,
        h('th', null, t('job.name')), h('th', null, t('job.state')), h('th', null, t('job.interval')),
        h('th', null, t('job.last')), h('th', null, ''))),
        h('tbody', null, s.jobs.map((j) => jobRow(j, orgs)))));
    });
  }

  function jobRow(j, orgs) {
    const org = h('input', { 'data-org': j.name, placeholder: t('job.org'), size: 14, value: orgs[j.name] || '' });
    const toggle = h('button', { class: 'toggle-pause', onclick: async () => {
      try {
        await api('POST', API + '/' + encodeURIComponent(j.name) + (j.paused ? '/resume' : '/pause'));
        route();
        note(t(j.paused ? 'job.resumedmsg' : 'job.pausedmsg', { job: j.name }));
      } catch (e) { showError(e); }
    } }, t(j.paused ? 'job.resume' : 'job.pause'));
    const runNow = h('button', { class: 'primary run-now', onclick: async () => {
      try {
        const body = org.value.trim() ? { orgId: org.value.trim() } : {};
        const res = await api('POST', API + '/' + encodeURIComponent(j.name) + '/run', body);
        orgs[j.name] = '';
        org.value = '';
        note(t('job.enqueued', { id: res.id }));
      } catch (e) { showError(e); }
    } }, t('job.runnow'));
    return h('tr', { 'data-job': j.name }, h('td', { class: 'mono' }, j.name), h('td', null, jobState(j)),
      h('td', null, j.intervalMs ? fmtDur(j.intervalMs) : t('job.adhoc')),
      h('td', null, j.lastRunAt ? [fmtTime(j.lastRunAt), ' ', j.lastStatus ? badge(j.lastStatus) : ''] : '—'),
      h('td', null, h('div', { class: 'actions' }, toggle, org, runNow)));
  }

  /* ---------------------------------------------------------------- */
  /* start                                                             */
  /* ---------------------------------------------------------------- */

  async function start() {
    $('login-form').addEventListener('submit', (ev) => { login(ev).catch(showError); });
    $('logout').addEventListener('click', () => { logout(); });
    $('lang').addEventListener('change', () => {
      lang = $('lang').value === 'es' ? 'es' : 'en';
      try { localStorage.setItem('jr.lang', lang); } catch (e) { /* private mode */ }
      applyLang();
      if (csrf) route();
    });
    window.addEventListener('hashchange', route);
    const s = await fetch('/dashboard/session', { credentials: 'same-origin', cache: 'no-store' }).then((r) => r.json());
    let saved = null;
    try { saved = localStorage.getItem('jr.lang'); } catch (e) { saved = null; }
    lang = saved === 'es' || saved === 'en' ? saved : (s.lang === 'es' ? 'es' : 'en');
    applyLang();
    if (s.authenticated && s.csrf) {
      csrf = s.csrf;
      showApp();
    } else {
      showLogin('');
    }
  }

  document.addEventListener('DOMContentLoaded', () => { start().catch(showError); });
})();
