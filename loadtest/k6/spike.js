// The seeds' spike test, against flujo's ingest: a normal load, a sudden spike,
// the spike held, and back down. flujo must answer every request (202, or 429 with
// Retry-After when its pipeline is full: backpressure, counted apart) and keep p95
// low.
//
//   k6 run loadtest/k6/spike.js                                  # http://127.0.0.1:8080
//   k6 run -e BASE_URL=http://flujo.example -e SPIKE_VUS=400 loadtest/k6/spike.js
//
// Environment: BASE_URL, BASE_VUS (default 20), SPIKE_VUS (default 200, the seeds'
// figure), BATCH (events per batch request, default 20), P95_MS (default 250).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const BASE_VUS = parseInt(__ENV.BASE_VUS || '20', 10);
const SPIKE_VUS = parseInt(__ENV.SPIKE_VUS || '200', 10);
const BATCH = parseInt(__ENV.BATCH || '20', 10);
const P95_MS = parseInt(__ENV.P95_MS || '250', 10);

const CATEGORIES = ['electronics', 'clothing', 'home', 'beauty'];
const WEATHERS = ['sunny', 'cloudy', 'rainy', 'foggy', 'snowy', 'stormy'];
const MUNICIPALITIES = ['Guatemala', 'Mixco', 'Villa Nueva', 'Antigua', 'Quetzaltenango', 'Escuintla'];

// 429 is flujo's documented backpressure, not an error: k6 must not count it as a
// failed request, but we track how often it happens.
http.setResponseCallback(http.expectedStatuses(202, 200, 429));
const backpressure = new Rate('flujo_backpressure');
const accepted = new Counter('flujo_events_accepted');

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: '10s', target: BASE_VUS },  // warm up to the normal load
        { duration: '20s', target: BASE_VUS },  // normal load
        { duration: '10s', target: SPIKE_VUS }, // the spike
        { duration: '30s', target: SPIKE_VUS }, // held
        { duration: '10s', target: BASE_VUS },  // back down
        { duration: '10s', target: BASE_VUS },  // recovery
        { duration: '5s', target: 0 },
      ],
      gracefulRampDown: '10s',
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: [`p(95)<${P95_MS}`],
    checks: ['rate>0.99'],
    flujo_backpressure: ['rate<0.05'],
  },
};

const pick = (list) => list[Math.floor(Math.random() * list.length)];
const uuid = () => `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}-${__VU}-${__ITER}`;

function purchase() {
  // The seeds' Spanish form.
  return {
    categoria: 1 + Math.floor(Math.random() * 4),
    producto_id: `P${1 + Math.floor(Math.random() * 200)}`,
    precio: Math.round(Math.random() * 200000) / 100 + 1,
    cantidad_vendida: 1 + Math.floor(Math.random() * 10),
  };
}

function sale(i) {
  return {
    id: `${uuid()}-${i}`,
    category: pick(CATEGORIES),
    product_id: `P${1 + Math.floor(Math.random() * 200)}`,
    price: Math.round(Math.random() * 200000) / 100 + 1,
    quantity: 1 + Math.floor(Math.random() * 10),
  };
}

function tweet() {
  return {
    municipality: pick(MUNICIPALITIES),
    weather: pick(WEATHERS),
    temperature: Math.round(Math.random() * 450) / 10 - 5,
    humidity: Math.round(Math.random() * 950) / 10 + 5,
  };
}

function post(path, body, events, name) {
  const res = http.post(`${BASE_URL}${path}`, JSON.stringify(body), {
    headers: { 'Content-Type': 'application/json' },
    tags: { name },
  });
  backpressure.add(res.status === 429);
  if (res.status === 429) {
    // Honour Retry-After, as a well-behaved client does.
    sleep(parseFloat(res.headers['Retry-After'] || '1'));
    return;
  }
  const ok = check(res, {
    'answered 202': (r) => r.status === 202,
    'every event accepted': (r) => r.status === 202 && r.json('accepted') === events,
  });
  if (ok) accepted.add(events);
}

export default function () {
  const roll = Math.random();
  if (roll < 0.4) {
    post('/purchase', purchase(), 1, 'purchase');
  } else if (roll < 0.8) {
    post('/input', tweet(), 1, 'input');
  } else {
    const batch = [];
    for (let i = 0; i < BATCH; i++) batch.push(sale(i));
    post('/v1/sales', batch, BATCH, 'sales batch');
  }
  sleep(0.05 + Math.random() * 0.1);
}
