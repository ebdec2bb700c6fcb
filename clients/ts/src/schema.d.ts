/**
 * Generated from voucherd's served /openapi.json by openapi-typescript.
 * Do not edit by hand: run `npm run generate -- <url>`.
 * `npm run check-types -- <url>` fails when this file differs from the live document.
 */

export interface paths {
    "/healthz": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["healthz"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/readyz": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["readyz"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/campaigns": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["listCampaigns"];
        put?: never;
        post: operations["createCampaign"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/campaigns/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["getCampaign"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch: operations["updateCampaign"];
        trace?: never;
    };
    "/v1/admin/campaigns/{id}/audit": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["getCampaignAudit"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/campaigns/{id}/live": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["watchCampaignLive"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/campaigns/{id}/redemptions.csv": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["exportCampaignRedemptionsCsv"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/campaigns/{id}/vouchers": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["listCampaignVouchers"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/campaigns/{id}/vouchers.csv": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["exportCampaignVouchersCsv"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["listEvents"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/users/{sub}/vouchers": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["listUserVouchersForSupport"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/vouchers/{code}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["getVoucherForSupport"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/vouchers/{code}/void": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: operations["voidVoucher"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/webhooks/dead-letters": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["listDeadLetters"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/admin/webhooks/dead-letters/{id}/replay": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: operations["replayDeadLetter"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/campaigns": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["listPublicCampaigns"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/campaigns/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["getPublicCampaign"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/campaigns/{id}/claims": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: operations["grabVoucher"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/me/vouchers": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["listMyVouchers"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/me/vouchers/{code}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["getMyVoucher"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/redemptions/{id}/rollback": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: operations["rollbackRedemption"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/vouchers/{code}/quote": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: operations["quoteVoucher"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/v1/vouchers/{code}/redemptions": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: operations["redeemVoucher"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        /** @description A voucher as support sees it: the holder's view, who holds it, and its void. */
        AdminVoucher: components["schemas"]["Voucher"] & {
            /** @description Whether its void returned its unit of stock to the campaign. */
            stock_returned: boolean;
            /** @description The holder (the JWT `sub` that grabbed it). */
            user_id: string;
            /**
             * Format: date-time
             * @description When an admin voided it; null unless `status` is `voided`.
             */
            voided_at?: string | null;
        };
        AdminVoucherList: {
            items: components["schemas"]["AdminVoucher"][];
            /** @description Pass as `cursor` for the next page; null on the last page. */
            next_cursor?: string | null;
        };
        Audit: {
            checks: components["schemas"]["AuditCheck"][];
            ok: boolean;
        };
        AuditCheck: {
            detail: string;
            name: string;
            ok: boolean;
        };
        /** @description A campaign as admins see it, with exact counters from Postgres. */
        Campaign: {
            /** Format: date-time */
            created_at: string;
            /** Format: date-time */
            ends_at: string;
            /** Format: uuid */
            id: string;
            /** Format: int64 */
            issued: number;
            /**
             * Format: int32
             * @description Vouchers of this campaign one order may take.
             */
            max_per_order: number;
            name: string;
            paused: boolean;
            /** Format: int32 */
            per_user_limit: number;
            /** Format: int64 */
            redeemed: number;
            /** Format: int64 */
            remaining: number;
            /** Format: date-time */
            starts_at: string;
            status: components["schemas"]["CampaignStatus"];
            /** Format: int64 */
            total_stock: number;
            /** Format: date-time */
            updated_at: string;
            voucher: components["schemas"]["VoucherTerms"];
        };
        CampaignList: {
            items: components["schemas"]["Campaign"][];
            /** @description Pass as `cursor` for the next page; null on the last page. */
            next_cursor?: string | null;
        };
        /** @enum {string} */
        CampaignStatus: "scheduled" | "active" | "paused" | "sold_out" | "ended";
        ClaimResponse: {
            voucher: components["schemas"]["Voucher"];
        };
        CreateCampaign: {
            /**
             * Format: date-time
             * @description After `starts_at` and in the future.
             */
            ends_at: string;
            /**
             * Format: int32
             * @description Vouchers of this campaign one order may take: 1 to 100; defaults to 1.
             */
            max_per_order?: number | null;
            /** @description 1 to 200 characters. */
            name: string;
            /**
             * Format: int32
             * @description 1 to 100; defaults to 1.
             */
            per_user_limit?: number | null;
            /**
             * Format: date-time
             * @description Defaults to now.
             */
            starts_at?: string | null;
            /**
             * Format: int64
             * @description 1 to 1,000,000,000.
             */
            total_stock: number;
            voucher: components["schemas"]["VoucherTerms"];
        };
        /**
         * @description An ISO 4217 alphabetic code (three upper-case letters).
         * @example VND
         */
        Currency: string;
        /** @description An event whose webhook delivery gave up, with why. */
        DeadLetter: components["schemas"]["Event"] & {
            /** Format: int32 */
            attempts: number;
            last_error?: string | null;
        };
        DeadLetterPage: {
            items: components["schemas"]["DeadLetter"][];
            /** Format: int64 */
            next_after: number;
        };
        /** @description What a voucher takes off an order, in integer minor units of `currency`. */
        Discount: {
            /** Format: int64 */
            amount: number;
            currency: components["schemas"]["Currency"];
            /** @enum {string} */
            type: "fixed";
        } | {
            /** Format: int32 */
            basis_points: number;
            currency: components["schemas"]["Currency"];
            /** Format: int64 */
            max_amount: number;
            /** @enum {string} */
            type: "percent";
        };
        /** @description The body of a route that takes no parameters: nothing, or `{}`. */
        EmptyBody: Record<string, never>;
        /** @description An event as consumers see it, in the log and in webhook bodies. */
        Event: {
            data: unknown;
            /** Format: uuid */
            id: string;
            /** Format: date-time */
            occurred_at: string;
            /**
             * Format: int64
             * @description Only grows; page with `after=<last seq seen>`.
             */
            seq: number;
            type: string;
        };
        EventPage: {
            items: components["schemas"]["Event"][];
            /**
             * Format: int64
             * @description Pass as `after` for the next page (the last `seq` here, or `after` if empty).
             */
            next_after: number;
        };
        /** @description One invalid field of a well-formed body. */
        FieldError: {
            /** @description JSON path of the field, e.g. `voucher.discount.amount`. */
            field: string;
            message: string;
        };
        Health: {
            status: string;
        };
        /** @description The campaign's counters, exact as of the frame's read. */
        LiveCampaign: {
            /** Format: int64 */
            issued: number;
            name: string;
            /** Format: int64 */
            remaining: number;
            status: components["schemas"]["CampaignStatus"];
            /** Format: int64 */
            total_stock: number;
        };
        /** @description One second of one campaign as this instance saw it. */
        LiveFrame: {
            /**
             * Format: int64
             * @description Grabs whose client left before an answer (not in `requests`): a batched
             *     grant may still have committed, and shows in the stock.
             */
            abandoned: number;
            /**
             * Format: date-time
             * @description When the frame was made, by Postgres' clock as last measured.
             */
            at: string;
            campaign?: components["schemas"]["LiveCampaign"] | null;
            /**
             * Format: int64
             * @description Grabs answered with a 5xx in the period (also counted in `refusals`).
             */
            errors_5xx: number;
            /**
             * Format: int64
             * @description Vouchers granted in the period.
             */
            grants: number;
            /**
             * @description The instance that measured these figures (`INSTANCE_NAME`): behind a balancer
             *     each replica reports only its own grabs.
             */
            instance: string;
            /**
             * Format: double
             * @description The period the counts below cover, in seconds (about one).
             */
            interval_seconds: number;
            /**
             * Format: double
             * @description The 99th percentile of the period's grab latencies, in milliseconds (to within
             *     10%); absent when there were no grabs.
             */
            p99_ms?: number | null;
            /** @description `ok`, or `unavailable` when this frame's read of the campaign failed. */
            postgres: string;
            /**
             * @description Refusals in the period by problem code (`sold_out`, `limit_reached`,
             *     `overloaded`, `timeout`, …), 5xx included.
             */
            refusals: {
                [key: string]: number;
            };
            /**
             * Format: int64
             * @description Grants replayed for a retried key in the period.
             */
            replays: number;
            /**
             * Format: int64
             * @description Grabs answered in the period (every outcome below, and the timeouts).
             */
            requests: number;
            /**
             * Format: int64
             * @description Sequence of this frame from its ticker (from 0): a watcher that reconnects
             *     and is sent a frame it has already seen can tell.
             */
            seq: number;
        };
        /** @description The problem+json body every error response carries. */
        Problem: {
            code: components["schemas"]["ProblemCode"];
            detail: string;
            errors?: components["schemas"]["FieldError"][] | null;
            /** Format: int32 */
            status: number;
            title: string;
            type: string;
        };
        /**
         * @description Stable machine-readable error code. A client should treat a code it does not know as the status alone.
         * @enum {string}
         */
        ProblemCode: "campaign_not_active" | "campaign_not_found" | "currency_mismatch" | "dead_letter_not_found" | "error" | "exports_busy" | "forbidden" | "headers_too_large" | "idempotency_key_in_use" | "idempotency_key_invalid" | "idempotency_key_missing" | "idempotency_key_reused" | "internal_error" | "limit_reached" | "malformed_request" | "method_not_allowed" | "not_found" | "order_below_minimum" | "order_discount_exceeded" | "order_mismatch" | "overloaded" | "payload_too_large" | "rate_limited" | "redemption_already_rolled_back" | "redemption_not_found" | "request_timeout" | "service_unavailable" | "sold_out" | "timeout" | "unauthorized" | "unsupported_media_type" | "upgrade_required" | "validation_failed" | "voucher_already_redeemed" | "voucher_expired" | "voucher_not_combinable" | "voucher_not_found" | "voucher_voided";
        /** @description The public view of a campaign; `remaining` may lag by about a second. */
        PublicCampaign: {
            /** Format: date-time */
            ends_at: string;
            /** Format: uuid */
            id: string;
            /**
             * Format: int32
             * @description Vouchers of this campaign one order may take.
             */
            max_per_order: number;
            name: string;
            /** Format: int32 */
            per_user_limit: number;
            /** Format: int64 */
            remaining: number;
            /**
             * Format: date-time
             * @description Now, by the clock that decides the opening (Postgres'): countdowns count from
             *     this, not from the device's clock.
             */
            server_time: string;
            /** Format: date-time */
            starts_at: string;
            status: components["schemas"]["CampaignStatus"];
            voucher: components["schemas"]["VoucherTerms"];
        };
        /** @description Campaigns live or upcoming, soonest first (at most 100). */
        PublicCampaignList: {
            items: components["schemas"]["PublicCampaign"][];
            /**
             * Format: date-time
             * @description Now, by the clock that decides the opening.
             */
            server_time: string;
        };
        /** @description What a redemption of this voucher on this order would give. */
        Quote: {
            /** @description The refusal's code, exactly as the redemption would answer it, when not. */
            code?: string | null;
            detail?: string | null;
            /**
             * Format: int64
             * @description What the voucher would take off, when redeemable.
             */
            discount_amount?: number | null;
            redeemable: boolean;
        };
        Readiness: {
            postgres: string;
            /** @description `ok`, `down` or `disabled` (no `REDIS_URL`). */
            redis: string;
            /** @description `ready`, `degraded` (Redis down: still serving, slower) or `unavailable`. */
            status: string;
        };
        RedeemRequest: {
            currency: components["schemas"]["Currency"];
            /**
             * Format: int64
             * @description The order total in minor units, > 0.
             */
            order_amount: number;
            /** @description The checkout's order id, 1 to 128 characters. */
            order_id: string;
        };
        Redemption: {
            /** Format: date-time */
            created_at: string;
            currency: string;
            /**
             * Format: int64
             * @description What the voucher takes off this order, in minor units.
             */
            discount_amount: number;
            /** Format: uuid */
            id: string;
            /** Format: int64 */
            order_amount: number;
            order_id: string;
            /** Format: date-time */
            rolled_back_at?: string | null;
            status: components["schemas"]["RedemptionStatus"];
            /** Format: uuid */
            voucher_id: string;
        };
        RedemptionResponse: {
            redemption: components["schemas"]["Redemption"];
            voucher: components["schemas"]["Voucher"];
        };
        /** @enum {string} */
        RedemptionStatus: "active" | "rolled_back";
        UpdateCampaign: {
            /**
             * Format: int64
             * @description Stock only ever grows: 1 to 1,000,000,000 more.
             */
            add_stock?: number | null;
            /** Format: date-time */
            ends_at?: string | null;
            paused?: boolean | null;
        };
        /** @description `POST /v1/admin/vouchers/{code}/void`'s body (or none). */
        VoidRequest: {
            /**
             * @description Move the voucher's unit of stock from `issued` back to `remaining` (a sold-out
             *     campaign grants again). Default false. The holder's per-user count is kept.
             */
            return_stock?: boolean;
        };
        VoidResponse: {
            voucher: components["schemas"]["AdminVoucher"];
        };
        /** @description A voucher as its owner sees it. */
        Voucher: {
            /** Format: uuid */
            campaign_id: string;
            code: string;
            discount: components["schemas"]["Discount"];
            /** Format: date-time */
            expires_at: string;
            /** Format: uuid */
            id: string;
            /** Format: date-time */
            issued_at: string;
            /** Format: int64 */
            min_order_amount: number;
            order_id?: string | null;
            /** Format: date-time */
            redeemed_at?: string | null;
            status: components["schemas"]["VoucherStatus"];
        };
        /**
         * @description One voucher looked up by code, with every redemption it had (rolled back ones
         *     too), oldest first.
         */
        VoucherDetail: components["schemas"]["AdminVoucher"] & {
            redemptions: components["schemas"]["Redemption"][];
        };
        VoucherList: {
            items: components["schemas"]["Voucher"][];
            /** @description Pass as `cursor` for the next page; null on the last page. */
            next_cursor?: string | null;
        };
        /** @enum {string} */
        VoucherStatus: "issued" | "redeemed" | "voided" | "expired";
        /** @description The voucher every grant of a campaign issues. */
        VoucherTerms: {
            discount: components["schemas"]["Discount"];
            /**
             * Format: date-time
             * @description The instant every voucher expires at the latest; later than the campaign's
             *     `ends_at`.
             */
            expires_at?: string | null;
            /**
             * Format: int64
             * @description Smallest order, in minor units of the discount's currency, the voucher applies to.
             */
            min_order_amount?: number;
            /**
             * Format: int32
             * @description How long an issued voucher stays redeemable (60 to 31536000). At least one of
             *     `valid_for_seconds` and `expires_at` is required; with both, the earlier wins.
             */
            valid_for_seconds?: number | null;
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    healthz: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the process is alive */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Health"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    readyz: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Readiness"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Readiness"];
                };
            };
        };
    };
    listCampaigns: {
        parameters: {
            query?: {
                /** @description 1 to 100, default 20. */
                limit?: number | null;
                /** @description The `next_cursor` of the previous page. */
                cursor?: string | null;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CampaignList"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    createCampaign: {
        parameters: {
            query?: never;
            header: {
                /** @description 8–255 printable ASCII characters */
                "Idempotency-Key": string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateCampaign"];
            };
        };
        responses: {
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Campaign"];
                };
            };
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description a refusal, or idempotency_key_in_use (with Retry-After): the key is in flight, or its commit was sent and its outcome is not yet known */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description payload_too_large (over 64 KiB), with Connection: close */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description rate_limited, with Retry-After */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    getCampaign: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Campaign"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    updateCampaign: {
        parameters: {
            query?: never;
            header: {
                "Idempotency-Key": string;
            };
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["UpdateCampaign"];
            };
        };
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Campaign"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description a refusal, or idempotency_key_in_use (with Retry-After): the key is in flight, or its commit was sent and its outcome is not yet known */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description payload_too_large (over 64 KiB), with Connection: close */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description rate_limited, with Retry-After */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    getCampaignAudit: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Audit"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    watchCampaignLive: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description server-sent events, one `frame` event a second whose data is a LiveFrame (JSON); comments keep the connection alive */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/event-stream": components["schemas"]["LiveFrame"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description campaign_not_found */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    exportCampaignRedemptionsCsv: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description every redemption of the campaign's vouchers (rolled back ones too) as CSV, as `vouchers.csv` is written */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/csv": string;
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description campaign_not_found */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description upgrade_required (HTTP/1.0) */
            426: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description exports_busy, service_unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    listCampaignVouchers: {
        parameters: {
            query?: {
                status?: components["schemas"]["VoucherStatus"] | null;
                /** @description 1 to 100, default 50. */
                limit?: number | null;
                /** @description The `next_cursor` of the previous page. */
                cursor?: string | null;
            };
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the campaign's vouchers, newest first */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AdminVoucherList"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description campaign_not_found */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (a bad `status`, `limit` or `cursor`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    exportCampaignVouchersCsv: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description every voucher of the campaign as CSV (RFC 4180 quoting, a header row), from one snapshot, streamed; a cell from outside that begins with `=`, `+`, `-` or `@` is prefixed with `'`. A body cut off before its end (no last chunk) is a failed export */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/csv": string;
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description campaign_not_found */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description upgrade_required: asked over HTTP/1.0, where a cut-off export could not be told from a whole one */
            426: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description exports_busy (`EXPORTS_MAX` exports are running; retry after `Retry-After`), service_unavailable */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    listEvents: {
        parameters: {
            query?: {
                /** @description Return events with `seq` greater than this (default 0). */
                after?: number | null;
                /** @description 1 to 1000, default 100. */
                limit?: number | null;
                /**
                 * @description Only events of this type (`voucher.issued`, `voucher.redeemed`,
                 *     `redemption.rolled_back`, `voucher.voided`, `campaign.created`,
                 *     `campaign.updated`, `campaign.sold_out`).
                 */
                type?: string | null;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EventPage"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (`type` names no event type, `after` or `limit` out of range) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    listUserVouchersForSupport: {
        parameters: {
            query?: {
                status?: components["schemas"]["VoucherStatus"] | null;
                /** @description 1 to 100, default 50. */
                limit?: number | null;
                /** @description The `next_cursor` of the previous page. */
                cursor?: string | null;
            };
            header?: never;
            path: {
                /** @description the user id (JWT `sub`), percent-encoded */
                sub: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the user's vouchers of every campaign, newest first */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AdminVoucherList"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (a `sub` no user can have, a bad `status`, `limit` or `cursor`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    getVoucherForSupport: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description the voucher's code, in any letter case */
                code: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["VoucherDetail"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description voucher_not_found */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    voidVoucher: {
        parameters: {
            query?: never;
            header: {
                /** @description 8–255 printable ASCII characters */
                "Idempotency-Key": string;
            };
            path: {
                code: string;
            };
            cookie?: never;
        };
        /** @description no body, `{}`, or `{"return_stock": true}` */
        requestBody?: {
            content: {
                "application/json": components["schemas"]["VoidRequest"] | null;
            };
        };
        responses: {
            /** @description voided (or replayed, with `Idempotent-Replayed: true`); a `voucher.voided` event is written */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["VoidResponse"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description voucher_not_found */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description voucher_voided (already), voucher_already_redeemed, voucher_expired, idempotency_key_in_use */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description payload_too_large (over 64 KiB), with Connection: close */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed, idempotency_key_reused */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description rate_limited, with Retry-After */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    listDeadLetters: {
        parameters: {
            query?: {
                /** @description Return events with `seq` greater than this (default 0). */
                after?: number | null;
                /** @description 1 to 1000, default 100. */
                limit?: number | null;
                /**
                 * @description Only events of this type (`voucher.issued`, `voucher.redeemed`,
                 *     `redemption.rolled_back`, `voucher.voided`, `campaign.created`,
                 *     `campaign.updated`, `campaign.sold_out`).
                 */
                type?: string | null;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DeadLetterPage"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    replayDeadLetter: {
        parameters: {
            query?: never;
            header: {
                "Idempotency-Key": string;
            };
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description queued for delivery again */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Event"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description no dead letter with this id */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description a refusal, or idempotency_key_in_use (with Retry-After): the key is in flight, or its commit was sent and its outcome is not yet known */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description payload_too_large (over 64 KiB), with Connection: close */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description rate_limited, with Retry-After */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    listPublicCampaigns: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    /** @description public, max-age=1 */
                    "Cache-Control"?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PublicCampaignList"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    getPublicCampaign: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PublicCampaign"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    grabVoucher: {
        parameters: {
            query?: never;
            header: {
                /** @description 8–255 printable ASCII characters */
                "Idempotency-Key": string;
            };
            path: {
                id: string;
            };
            cookie?: never;
        };
        /** @description no body, or `{}` */
        requestBody?: {
            content: {
                "application/json": components["schemas"]["EmptyBody"] | null;
            };
        };
        responses: {
            /** @description granted (or replayed, with `Idempotent-Replayed: true`) */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ClaimResponse"];
                };
            };
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description campaign_not_found */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description sold_out, limit_reached, campaign_not_active or idempotency_key_in_use */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description payload_too_large (over 64 KiB), with Connection: close */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description idempotency_key_reused */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description rate_limited, with Retry-After; the key is not recorded */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description overloaded (the campaign's queue is past its bound, or the grab could not be written before GRAB_DEADLINE) or service_unavailable, with a jittered Retry-After; nothing was recorded, retry with the same key */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    listMyVouchers: {
        parameters: {
            query?: {
                status?: components["schemas"]["VoucherStatus"] | null;
                /** @description 1 to 100, default 50. */
                limit?: number | null;
                /** @description The `next_cursor` of the previous page. */
                cursor?: string | null;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["VoucherList"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description not_found, or the resource's own *_not_found code */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    getMyVoucher: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                code: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Voucher"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    rollbackRedemption: {
        parameters: {
            query?: never;
            header: {
                "Idempotency-Key": string;
                /** @description with a service token: the user the order service acts for */
                "On-Behalf-Of"?: string | null;
            };
            path: {
                id: string;
            };
            cookie?: never;
        };
        /** @description no body, or `{}` */
        requestBody?: {
            content: {
                "application/json": components["schemas"]["EmptyBody"] | null;
            };
        };
        responses: {
            /** @description rolled back; the voucher is `issued` again */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RedemptionResponse"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description redemption_not_found (unknown, or not the caller's) */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description redemption_already_rolled_back (by another key) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description payload_too_large (over 64 KiB), with Connection: close */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (with `errors`) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description rate_limited, with Retry-After */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    quoteVoucher: {
        parameters: {
            query: {
                /** @description The checkout's order id, 1 to 128 characters. */
                order_id: string;
                /** @description The order total in minor units, > 0. */
                order_amount: number;
                /** @example VND */
                currency: string;
            };
            header?: {
                /** @description with a service token: the user the order service acts for */
                "On-Behalf-Of"?: string | null;
            };
            path: {
                code: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description what a redemption would give now: `redeemable` with `discount_amount`, or not with the `code` the redemption would answer; no effect */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Quote"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description voucher_not_found (unknown, or not the caller's) */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description validation_failed (bad query values) */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
    redeemVoucher: {
        parameters: {
            query?: never;
            header: {
                "Idempotency-Key": string;
                /** @description with a service token: the user the order service acts for */
                "On-Behalf-Of"?: string | null;
            };
            path: {
                code: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["RedeemRequest"];
            };
        };
        responses: {
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RedemptionResponse"];
                };
            };
            /** @description malformed_request (a malformed request line, header field or body) or an invalid header */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unauthorized, with WWW-Authenticate: Bearer */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description forbidden (a credential that may not redeem) */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description voucher_not_found (unknown, or not the caller's) */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description request_timeout: the body did not arrive within BODY_READ_TIMEOUT; nothing changed */
            408: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description voucher_voided (an admin voided it), voucher_already_redeemed, voucher_expired, order_discount_exceeded (the order's active discounts would pass its amount; never reduced to fit), voucher_not_combinable (the order already carries max_per_order vouchers of this campaign) */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description payload_too_large (over 64 KiB), with Connection: close */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description unsupported_media_type: a non-empty body must be sent as application/json or application/*+json (parameters such as charset allowed); an empty body needs no type */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description order_below_minimum, currency_mismatch, order_mismatch (the order was first redeemed with another amount or currency), validation_failed */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description rate_limited, with Retry-After */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description headers_too_large: the request head is over 16 KiB or has over 100 header fields; the connection is closed */
            431: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
            /** @description service_unavailable, timeout or overloaded, with a jittered Retry-After (1-3 s); nothing changed */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/problem+json": components["schemas"]["Problem"];
                };
            };
        };
    };
}
