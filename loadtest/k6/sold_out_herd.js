// sold_out_herd: the crowd that keeps pressing after the stock is gone. Every answer
// must be a fast 409 sold_out, served without touching Postgres.
import exec from 'k6/execution';
import { check } from 'k6';
import { RUN, auditOk, createCampaign, grab } from './lib.js';

export const options = {
  scenarios: {
    sold_out_herd: {
      executor: 'constant-arrival-rate', rate: Number(__ENV.RATE || 3000), timeUnit: '1s',
      duration: __ENV.DURATION || '15s', preAllocatedVUs: 100, maxVUs: Number(__ENV.MAX_VUS || 500),
    },
  },
  thresholds: {
    checks: ['rate>0.999'],
    'http_req_duration{name:grab}': ['p(99)<100'],
  },
};

export function setup() {
  const campaign = createCampaign(1, 1);
  const last = grab(campaign, `${RUN}-first`, `${RUN}-first-key`);
  if (last.status !== 201) throw new Error(`could not take the last voucher: ${last.status}`);
  return { campaign };
}

export default function (data) {
  const i = exec.scenario.iterationInTest;
  const res = grab(data.campaign, `${RUN}-late${i}`, `${RUN}-lk${i}`);
  check(res, { 'sold out': (r) => r.status === 409 && r.json('code') === 'sold_out' });
}

export function teardown(data) {
  auditOk(data.campaign);
}
