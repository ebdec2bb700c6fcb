//! The pages people click: the storefront demo (`/demo`) and the admin console
//! (`/admin`). Their sources are in `clients/web`; the built files in `assets/web`
//! are committed and embedded here at compile time, so the binary serves them with
//! no Node on the machine and nothing fetched from another host.

use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    AppState,
    error::{framework_problem, problem_response},
};

/// The pages' routes; not API operations, so not in the OpenAPI document.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route(
            "/demo",
            get(|h: HeaderMap| async move { serve("demo.html", &h) }),
        )
        .route(
            "/admin",
            get(|h: HeaderMap| async move { serve("admin.html", &h) }),
        )
        .route(
            "/web/{name}",
            get(|Path(name): Path<String>, h: HeaderMap| async move { serve(&name, &h) }),
        )
}

/// Everything from this origin only, and no inline script or style: nothing a page
/// shows (a campaign's name, a problem's detail) can run, or call another host.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../assets/web/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("demo.html", HTML),
    asset!("admin.html", HTML),
    asset!("demo.js", JS),
    asset!("admin.js", JS),
    asset!("admin.css", CSS),
    asset!("style.css", CSS),
];

/// Each asset's strong validator, from its bytes: unchanged files revalidate to a
/// 304 across restarts and replicas, changed ones never match.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("hex is a valid header value")
        })
        .collect()
});

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        let code = framework_problem(StatusCode::NOT_FOUND).code;
        return problem_response(StatusCode::NOT_FOUND, code, "no such page".into(), None);
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    // weak comparison, as If-None-Match asks (RFC 9110 13.1.2); `*` matches any
    let fresh = request.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes()
        })
    });
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_an_unknown_one_is_404() {
        for a in ASSETS {
            let r = serve(a.name, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{}", a.name);
            assert_eq!(r.headers()[header::CONTENT_TYPE], a.content_type);
            assert!(!a.body.is_empty());
        }
        for name in ["", "../Cargo.toml", "demo.html\0", "DEMO.HTML"] {
            assert_eq!(
                serve(name, &HeaderMap::new()).status(),
                StatusCode::NOT_FOUND
            );
        }
    }

    #[test]
    fn a_matching_etag_revalidates_to_304() {
        let first = serve("demo.js", &HeaderMap::new());
        let etag = first.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\", "));
        assert_eq!(serve("demo.js", &h).status(), StatusCode::OK);
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", {}", etag.to_str().unwrap())).unwrap(),
        );
        assert_eq!(serve("demo.js", &h).status(), StatusCode::NOT_MODIFIED);
        let weak = format!("W/{}", etag.to_str().unwrap());
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&weak).unwrap());
        assert_eq!(serve("demo.js", &h).status(), StatusCode::NOT_MODIFIED);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(serve("demo.js", &h).status(), StatusCode::NOT_MODIFIED);
    }
}
