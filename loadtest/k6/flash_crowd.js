// flash_crowd: the promotion opens. Arrivals ramp from zero to PEAK per second within
// seconds on one campaign, far more users than stock; every user grabs once.
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { RUN, auditOk, createCampaign, grab } from './lib.js';

const granted = new Counter('granted');
const soldOut = new Counter('sold_out');
const PEAK = Number(__ENV.PEAK || 2000);

export const options = {
  scenarios: {
    flash_crowd: {
      executor: 'ramping-arrival-rate', startRate: 0, timeUnit: '1s',
      preAllocatedVUs: 200, maxVUs: Number(__ENV.MAX_VUS || 1000),
      stages: [{ target: PEAK, duration: __ENV.RAMP || '3s' }, { target: PEAK, duration: __ENV.HOLD || '12s' }],
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:grab}': ['p(99)<1500'],
    checks: ['rate>0.99'],
  },
};

export function setup() {
  return { campaign: createCampaign(Number(__ENV.STOCK || 10000), 1) };
}

export default function (data) {
  const i = exec.scenario.iterationInTest;
  const res = grab(data.campaign, `${RUN}-u${i}`, `${RUN}-k${i}`);
  check(res, { 'granted or refused': (r) => r.status === 201 || (r.status === 409 && r.json('code') === 'sold_out') });
  if (res.status === 201) granted.add(1); else if (res.status === 409) soldOut.add(1);
}

export function teardown(data) {
  auditOk(data.campaign);
}
