//! The dashboard: one page, one script and one stylesheet, embedded in the binary with
//! `include_str!` and served from the admin address (`/`, `/dashboard/app.js`,
//! `/dashboard/style.css`). No build step and nothing loaded from elsewhere, so it works
//! offline; the script polls `GET /api/dashboard` once a second and redraws.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// The page may load only its own files and talk only to its own origin.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The dashboard's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small and embedded: always asked again, so a new binary shows its own page.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX.contains("/dashboard/app.js") && INDEX.contains("/dashboard/style.css"));
        for text in [INDEX, APP, STYLE] {
            // The SVG namespace is a name, not a link.
            let text = text.replace("\"http://www.w3.org/2000/svg\"", "");
            for external in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(external), "{external} in an asset");
            }
        }
        // Data is written with textContent, never parsed as HTML.
        assert!(!APP.contains("innerHTML"));
    }
}
