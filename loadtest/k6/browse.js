// browse: the promotion page. Public campaign reads with grabs mixed in (one in five
// iterations), as a shop front produces while the sale is on.
import exec from 'k6/execution';
import http from 'k6/http';
import { check } from 'k6';
import { BASE, RUN, auditOk, createCampaign, grab } from './lib.js';

export const options = {
  scenarios: {
    browse: {
      executor: 'constant-arrival-rate', rate: Number(__ENV.RATE || 3000), timeUnit: '1s',
      duration: __ENV.DURATION || '15s', preAllocatedVUs: 100, maxVUs: Number(__ENV.MAX_VUS || 500),
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:read}': ['p(99)<200'],
    'http_req_duration{name:grab}': ['p(99)<1500'],
    checks: ['rate>0.99'],
  },
};

export function setup() {
  return { campaign: createCampaign(Number(__ENV.STOCK || 2000), 1) };
}

export default function (data) {
  const i = exec.scenario.iterationInTest;
  if (i % 5 === 4) {
    const res = grab(data.campaign, `${RUN}-u${i}`, `${RUN}-k${i}`);
    check(res, { 'grab answered': (r) => r.status === 201 || r.status === 409 });
  } else {
    const res = http.get(`${BASE}/v1/campaigns/${data.campaign}`, { tags: { name: 'read' } });
    check(res, { 'campaign shown': (r) => r.status === 200 && r.json('id') === data.campaign });
  }
}

export function teardown(data) {
  auditOk(data.campaign);
}
