//! `cargo run --example report_html -- REPORT.md OUT.html`: a report as the HTML page a markdown
//! viewer shows (GitHub-flavoured tables, the SVG figures linked relative to the report), for
//! `tests/render/report_png.sh` to photograph in a headless browser. Once loaded, the page puts its
//! height in its title, so the script can size the window to the whole page.

use std::path::Path;

const STYLE: &str = "body{font-family:sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#1f2328;\
line-height:1.5}table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}th,td{border:1px solid #d0d7de;\
padding:4px 10px}th{background:#f6f8fa}tr:nth-child(2n) td{background:#f6f8fa}img{max-width:100%}\
code,pre{background:#f6f8fa;font-size:13px}pre{padding:12px;overflow:auto}h1,h2{border-bottom:1px solid #d0d7de}";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [md, out] = args.as_slice() else {
        eprintln!("usage: report_html REPORT.md OUT.html");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(md) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {md}: {e}");
            std::process::exit(1);
        }
    };
    let mut options = comrak::Options::default();
    options.extension.table = true;
    options.extension.strikethrough = true;
    options.extension.autolink = true;
    let body = comrak::markdown_to_html(&text, &options);
    // Figures are linked relative to the report: the page is given the report's folder as its base.
    let base = std::fs::canonicalize(Path::new(md).parent().unwrap_or(Path::new(".")))
        .map(|p| format!("file://{}/", p.display()))
        .unwrap_or_default();
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><base href=\"{base}\"><style>{STYLE}</style></head>\
         <body>{body}<script>window.addEventListener('load',()=>{{document.title='height:'+\
         document.documentElement.scrollHeight}})</script></body></html>"
    );
    if let Err(e) = std::fs::write(out, page) {
        eprintln!("error: {out}: {e}");
        std::process::exit(1);
    }
}
