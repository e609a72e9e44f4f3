//! The web page (plain HTML/JS/CSS, no build step: students take exams, educators open
//! score reports) and the API documents.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const ATTEMPT_SCRIPT: &str = include_str!("../web/attempt.js");
const ADAPTIVE_SCRIPT: &str = include_str!("../web/adaptive.js");
const REPORTS_SCRIPT: &str = include_str!("../web/reports.js");
const STYLE: &str = include_str!("../web/style.css");
const OPENAPI: &str = include_str!("../web/openapi.json");
const DOCS: &str = include_str!("../web/docs.html");

pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// A script of the page. The page's script is split by role: index.html loads attempt.js,
/// adaptive.js and reports.js before app.js (the shared helpers, the wiring and boot).
fn javascript(source: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        source,
    )
        .into_response()
}

pub async fn script() -> Response {
    javascript(SCRIPT)
}

pub async fn attempt_script() -> Response {
    javascript(ATTEMPT_SCRIPT)
}

pub async fn adaptive_script() -> Response {
    javascript(ADAPTIVE_SCRIPT)
}

pub async fn reports_script() -> Response {
    javascript(REPORTS_SCRIPT)
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
    fn page_loads_every_script_with_app_js_last() {
        // app.js calls boot() when it runs, so the scripts it calls into come before it.
        let sources: Vec<&str> = super::INDEX
            .split("<script src=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        assert_eq!(
            sources,
            ["/attempt.js", "/adaptive.js", "/reports.js", "/app.js"]
        );
        for script in [
            super::SCRIPT,
            super::ATTEMPT_SCRIPT,
            super::ADAPTIVE_SCRIPT,
            super::REPORTS_SCRIPT,
        ] {
            assert!(script.contains("\"use strict\";"));
        }
        assert!(super::SCRIPT.trim_end().ends_with("boot();"));
    }

    #[test]
    fn openapi_document_is_valid_json_listing_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/api/exams",
            "/api/exams/{name}",
            "/api/exams/{name}/submissions",
            "/api/exams/{name}/attempts",
            "/api/attempts",
            "/api/attempts/{id}",
            "/api/attempts/{id}/answers/{index}",
            "/api/attempts/{id}/submit",
            "/api/results",
            "/api/results/{id}",
            "/api/score-cards",
            "/api/exams/{name}/item-stats",
            "/api/exams/{name}/calibrate",
            "/api/exams/{name}/calibrations",
            "/api/exams/{name}/calibrations/{version}",
            "/api/adaptive/{exam}/sessions",
            "/api/adaptive/sessions",
            "/api/adaptive/sessions/{id}",
            "/api/adaptive/sessions/{id}/answers",
        ] {
            assert!(
                paths.contains_key(route),
                "{route} missing from openapi.json"
            );
        }
        // Every route of the adaptive mode and calibration has its method, and every
        // schema reference resolves.
        for (route, method) in [
            ("/api/adaptive/{exam}/sessions", "post"),
            ("/api/adaptive/sessions", "get"),
            ("/api/adaptive/sessions/{id}", "get"),
            ("/api/adaptive/sessions/{id}/answers", "post"),
            ("/api/exams/{name}/calibrate", "post"),
            ("/api/exams/{name}/calibrations", "get"),
            ("/api/exams/{name}/calibrations/{version}", "get"),
            ("/api/reports/exams", "get"),
            ("/api/exams/{name}/attempts", "post"),
            ("/api/attempts", "get"),
            ("/api/attempts/{id}", "get"),
            ("/api/attempts/{id}/answers/{index}", "put"),
            ("/api/attempts/{id}/submit", "post"),
            ("/api/reports/exams/{name}", "get"),
        ] {
            let op = &paths[route][method];
            assert!(op.is_object(), "{method} {route} missing from openapi.json");
            assert!(
                op["responses"].is_object(),
                "{method} {route}: no responses"
            );
            assert!(op["security"].is_array(), "{method} {route}: no security");
        }
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        match (k.as_str(), v.as_str()) {
                            ("$ref", Some(r)) => out.push(r),
                            _ => refs(v, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }
}
