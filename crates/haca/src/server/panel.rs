//! The web panel: one page, one script, one stylesheet, compiled into the binary so that a
//! user needs no build step. The page signs in with a review token and talks to the same API
//! as everyone else; without a token it shows the sign-in form and nothing else.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../../../../web/panel/index.html");
const SCRIPT: &str = include_str!("../../../../web/panel/panel.js");
const STYLE: &str = include_str!("../../../../web/panel/panel.css");

/// The page's scripts and styles come from this node only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}

pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
}
