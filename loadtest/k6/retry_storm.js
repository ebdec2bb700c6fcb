// retry_storm: impatient clients. Each gives up after a very short timeout and
// retries with the same Idempotency-Key until it has an answer; every retry that
// lands after the first grant must replay the same voucher.
import exec from 'k6/execution';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { RUN, auditOk, createCampaign, grab } from './lib.js';

const retries = new Counter('retries');
const replayMismatch = new Counter('replay_mismatch');
const RATE = Number(__ENV.RATE || 500);

export const options = {
  scenarios: {
    retry_storm: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: __ENV.DURATION || '15s',
      preAllocatedVUs: 200, maxVUs: Number(__ENV.MAX_VUS || 1000),
    },
  },
  thresholds: {
    // Timed-out attempts are expected here; what must hold is the outcome.
    checks: ['rate>0.99'],
    replay_mismatch: ['count==0'],
    'http_req_duration{name:grab}': ['p(99)<2000'],
  },
};

export function setup() {
  return { campaign: createCampaign(Number(__ENV.STOCK || 5000), 1) };
}

export default function (data) {
  const i = exec.scenario.iterationInTest;
  const user = `${RUN}-u${i}`;
  const key = `${RUN}-k${i}`;
  let first = grab(data.campaign, user, key, { timeout: __ENV.IMPATIENCE || '15ms' });
  let answer = first.status !== 0 && first.status !== 429 ? first : null;
  for (let attempt = 0; !answer && attempt < 8; attempt++) {
    retries.add(1);
    sleep(0.05 * (attempt + 1));
    const r = grab(data.campaign, user, key, { timeout: '10s' });
    if (r.status !== 0 && r.status !== 429) answer = r;
  }
  // Once answered, ask once more: a grant must replay byte for byte.
  const again = answer && answer.status === 201 ? grab(data.campaign, user, key) : null;
  if (again && (again.status !== 201 || again.body !== answer.body)) replayMismatch.add(1);
  check(answer, {
    'answered in the end': (r) => r !== null,
    'granted or sold out': (r) => r !== null && (r.status === 201 || (r.status === 409 && r.json('code') === 'sold_out')),
  });
}

export function teardown(data) {
  auditOk(data.campaign);
}
