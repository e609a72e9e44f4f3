//! The student web page (plain HTML/JS/CSS, no build step) and the API documents.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
const OPENAPI: &str = include_str!("../web/openapi.json");
const DOCS: &str = include_str!("../web/docs.html");

pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn docs() -> Html<&'static str> {
    Html(DOCS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_is_valid_json_listing_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/api/exams",
            "/api/exams/{name}",
            "/api/exams/{name}/submissions",
            "/api/results",
            "/api/results/{id}",
            "/api/score-cards",
            "/api/exams/{name}/item-stats",
        ] {
            assert!(
                paths.contains_key(route),
                "{route} missing from openapi.json"
            );
        }
    }
}
