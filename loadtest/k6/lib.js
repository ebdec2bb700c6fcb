// Shared by the k6 scenarios: users sign their own HS256 tokens, every grab carries
// its own Idempotency-Key, and setup/teardown talk to the admin API.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';
import { check } from 'k6';

export const BASE = __ENV.VOUCHERD_URL || 'http://127.0.0.1:8080';
const SECRET = __ENV.JWT_SECRET || 'dev-only-jwt-secret-change-me-0123456789';
const ADMIN = __ENV.ADMIN_TOKEN || 'dev-only-admin-token';
export const RUN = __ENV.RUN || `k6-${Date.now()}`;

// 201 and 409 are answers, not failures: only the rest count in http_req_failed.
http.setResponseCallback(http.expectedStatuses(200, 201, 409));

export function token(sub) {
  const header = encoding.b64encode(JSON.stringify({ alg: 'HS256', typ: 'JWT' }), 'rawurl');
  const claims = encoding.b64encode(
    JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 4 * 3600 }), 'rawurl');
  const sig = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${sig}`;
}

export function createCampaign(stock, perUserLimit) {
  const res = http.post(`${BASE}/v1/admin/campaigns`, JSON.stringify({
    name: `k6 ${RUN}`, total_stock: stock, per_user_limit: perUserLimit || 1,
    ends_at: '2099-01-01T00:00:00Z',
    voucher: { discount: { type: 'fixed', amount: 1000, currency: 'VND' }, valid_for_seconds: 86400 },
  }), { headers: { Authorization: `Bearer ${ADMIN}`, 'Idempotency-Key': `${RUN}-create-${stock}-${Math.random()}`,
                   'Content-Type': 'application/json' } });
  if (res.status !== 201) throw new Error(`creating a campaign: ${res.status} ${res.body}`);
  return res.json('id');
}

export function grab(campaign, user, key, params) {
  return http.post(`${BASE}/v1/campaigns/${campaign}/claims`, null, Object.assign({
    headers: { Authorization: `Bearer ${token(user)}`, 'Idempotency-Key': key },
    tags: { name: 'grab' },
  }, params || {}));
}

// After the run: the campaign's invariants checked by the service against its rows.
export function auditOk(campaign) {
  const res = http.get(`${BASE}/v1/admin/campaigns/${campaign}/audit`,
    { headers: { Authorization: `Bearer ${ADMIN}` } });
  const ok = check(res, { 'audit ok': (r) => r.status === 200 && r.json('ok') === true });
  const c = http.get(`${BASE}/v1/admin/campaigns/${campaign}`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  console.log(`campaign ${campaign}: issued ${c.json('issued')} of ${c.json('total_stock')}, audit ok: ${ok}`);
  return ok;
}
