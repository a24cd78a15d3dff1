//! `GET /console`, `GET /console/console.js`, `GET /console/console.css`: the operations
//! console, a single page whose three files are compiled into the binary. No key is needed to
//! load it; the page asks for one and calls the JSON API with it, and the server checks every
//! call as any other. Every answer carries a Content-Security-Policy that allows scripts,
//! styles and requests from this origin only (no inline script), `X-Frame-Options: DENY` and
//! `Referrer-Policy: no-referrer`.

use actix_web::http::header;
use actix_web::HttpResponse;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Scripts, styles and `fetch` from this origin only; no inline script or style, no frames,
/// no forms posted anywhere, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Revalidated on every load: a new binary serves its own console at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The console's page.
#[utoipa::path(get, path = "/console", tag = "console",
    responses((status = 200, description = "The operations console (HTML); it asks for an API key", body = String, content_type = "text/html")))]
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// The console's script.
#[utoipa::path(get, path = "/console/console.js", tag = "console",
    responses((status = 200, description = "The console's script", body = String, content_type = "text/javascript")))]
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The console's style sheet.
#[utoipa::path(get, path = "/console/console.css", tag = "console",
    responses((status = 200, description = "The console's style sheet", body = String, content_type = "text/css")))]
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads its script and style from this origin and holds no inline script, no
    /// inline handler and no outside address (it must work with no internet).
    #[test]
    fn the_page_has_no_inline_script_and_no_outside_address() {
        assert!(PAGE.contains(r#"<script src="/console/console.js" defer></script>"#));
        assert!(PAGE.contains(r#"href="/console/console.css""#));
        assert_eq!(
            PAGE.matches("<script").count(),
            1,
            "one script tag, no inline script"
        );
        for text in [PAGE, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(!PAGE.contains(" style=") && !PAGE.contains(" onclick="));
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
        assert!(!SCRIPT.contains("eval(") && !SCRIPT.contains("document.write"));
        // The key is kept in sessionStorage only.
        assert!(!SCRIPT.contains("localStorage") && !SCRIPT.contains("document.cookie"));
    }
}
