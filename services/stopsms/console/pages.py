"""The CNDP's console pages, in French and Arabic: plain HTML, one stylesheet, no script.

Every page is rendered from the answers of ``RegulatorService`` (the same calls, the same
permissions, the same audit), so what staff see in the browser is what the API answers. The
compliance chart is an inline SVG drawn here, so the page needs nothing from the internet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from stopsms.v1 import events_pb2, regulator_pb2

LANGUAGES = ("fr", "ar")

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "StopSMS — console de la CNDP",
        "switch": "العربية",
        "cases": "Dossiers",
        "search": "Recherche",
        "compliance": "Conformité",
        "ranked": "Les dossiers, les plus graves d'abord",
        "reference": "Dossier",
        "kind": "Nature",
        "sender": "Expéditeur",
        "complaints": "Plaintes",
        "findings": "Constats",
        "opened": "Ouvert le",
        "parties": "Parties concernées",
        "declared": "Déclaré",
        "informal": "Secteur informel",
        "by_opt_out": "message après opposition",
        "by_threshold": "seuil de plaintes",
        "none": "Aucun dossier pour l'instant.",
        "informal_top": "Expéditeurs non déclarés les plus signalés",
        "phone": "numéro de téléphone",
        "case_open": "dossier ouvert",
        "no_case": "pas encore de dossier",
        "timeline": "Chronologie",
        "complainant": "Plaignant",
        "origin": "Origine",
        "text": "Texte",
        "export": "Exporter le dossier signé (ZIP : PDF, JSON et leurs signatures)",
        "export_full": "Copie du parquet (numéros en clair, journalisée)",
        "search_label": "Référence (SPAM-…, identifiant d'une demande) ou numéro",
        "search_go": "Chercher",
        "subject": "Sujet (pseudonyme)",
        "requests": "Demandes",
        "action": "Action",
        "scope": "Portée",
        "acted": "Demandé le",
        "decided": "Décidé le",
        "proof": "Preuve",
        "done": "appliquée par toutes les parties",
        "pending": "en cours",
        "audit": "Qui a consulté ce citoyen",
        "who": "Qui",
        "when": "Quand",
        "what": "Quoi",
        "party": "Partie",
        "applied": "Changements appliqués",
        "late": "En retard",
        "with_findings": "Plaintes avec constat",
        "period": "Période",
        "days": "jours",
        "chart": "Temps de propagation (p99 par jour, ms)",
        "objective": "objectif",
        "all": "tous les messages",
        "stop": "arrêt",
        "start": "reprise",
        "error": "Erreur",
        "back": "Retour aux dossiers",
    },
    "ar": {
        "title": "StopSMS — لوحة اللجنة الوطنية لمراقبة حماية المعطيات",
        "switch": "Français",
        "cases": "الملفات",
        "search": "بحث",
        "compliance": "الامتثال",
        "ranked": "الملفات، الأخطر أولاً",
        "reference": "الملف",
        "kind": "النوع",
        "sender": "المرسل",
        "complaints": "الشكايات",
        "findings": "المعاينات",
        "opened": "فُتح في",
        "parties": "الأطراف المعنية",
        "declared": "مصرّح به",
        "informal": "القطاع غير المهيكل",
        "by_opt_out": "رسالة بعد الاعتراض",
        "by_threshold": "عتبة الشكايات",
        "none": "لا توجد ملفات حالياً.",
        "informal_top": "المرسلون غير المصرّح بهم الأكثر تبليغاً",
        "phone": "رقم هاتف",
        "case_open": "ملف مفتوح",
        "no_case": "لا ملف بعد",
        "timeline": "التسلسل الزمني",
        "complainant": "المشتكي",
        "origin": "المصدر",
        "text": "النص",
        "export": "تصدير الملف الموقّع (ZIP: PDF وJSON وتوقيعاتهما)",
        "export_full": "نسخة النيابة العامة (الأرقام كاملة، مسجّلة)",
        "search_label": "المرجع (SPAM-…، معرّف طلب) أو الرقم",
        "search_go": "ابحث",
        "subject": "الموضوع (اسم مستعار)",
        "requests": "الطلبات",
        "action": "الإجراء",
        "scope": "النطاق",
        "acted": "طُلب في",
        "decided": "قُرّر في",
        "proof": "الإثبات",
        "done": "طبّقته جميع الأطراف",
        "pending": "قيد التطبيق",
        "audit": "من اطّلع على هذا المواطن",
        "who": "من",
        "when": "متى",
        "what": "ماذا",
        "party": "الطرف",
        "applied": "التغييرات المطبّقة",
        "late": "متأخرة",
        "with_findings": "شكايات بمعاينة",
        "period": "الفترة",
        "days": "يوماً",
        "chart": "زمن الانتشار (p99 يومياً، ملي ثانية)",
        "objective": "الهدف",
        "all": "جميع الرسائل",
        "stop": "إيقاف",
        "start": "استئناف",
        "error": "خطأ",
        "back": "العودة إلى الملفات",
    },
}

FINDINGS = {
    "fr": {
        events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT: "Envoyé après l'opposition",
        events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER: "Expéditeur non déclaré",
        events_pb2.COMPLAINT_FINDING_SENDER_SUSPENDED: "Expéditeur suspendu",
        events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION: "Sans mention StopSMS",
        events_pb2.COMPLAINT_FINDING_NO_FINDING: "Aucun manquement",
    },
    "ar": {
        events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT: "أُرسلت بعد الاعتراض",
        events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER: "مرسل غير مصرّح به",
        events_pb2.COMPLAINT_FINDING_SENDER_SUSPENDED: "مرسل موقوف",
        events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION: "بدون إشارة StopSMS",
        events_pb2.COMPLAINT_FINDING_NO_FINDING: "لا مخالفة",
    },
}

_STYLE = """
body{font-family:system-ui,"Noto Sans","Noto Sans Arabic",sans-serif;margin:0;color:#1c2430}
header{background:#0b4f6c;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;
align-items:center;flex-wrap:wrap}header a{color:#fff}header h1{font-size:1.1rem;margin:0}
main{padding:1rem;max-width:1100px}table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border-bottom:1px solid #d5dbe3;padding:.35rem .5rem;text-align:start;vertical-align:top}
th{background:#eef2f6}.serious{color:#a4161a;font-weight:600}.muted{color:#5b6675}
.tag{display:inline-block;border-radius:.3rem;padding:0 .4rem;background:#eef2f6}
form.inline{display:flex;gap:.5rem;flex-wrap:wrap}input{padding:.3rem;min-width:18rem}
a.button,button{background:#0b4f6c;color:#fff;border:0;border-radius:.3rem;padding:.4rem .8rem;
text-decoration:none;display:inline-block}a.secondary{background:#5b6675}
ol.timeline li{margin:.2rem 0}section{margin:1rem 0}svg{background:#fafbfc;max-width:100%}
"""


def t(lang: str, key: str) -> str:
    """One text of the page, escaped."""
    return escape(TEXTS[lang][key])


def when(stamp: object) -> str:
    """A Timestamp as the pages show it (UTC, to the second)."""
    ms = stamp.ToMilliseconds()  # type: ignore[attr-defined]
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def page(lang: str, title: str, body: str, *, here: str) -> str:
    """A whole page: the navigation, the language switch (back to ``here``), the body."""
    other = "ar" if lang == "fr" else "fr"
    direction = "rtl" if lang == "ar" else "ltr"
    join = "&" if "?" in here else "?"
    return (
        f'<!doctype html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} — StopSMS</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{t(lang, 'title')}</h1>"
        f'<a href="/?lang={lang}">{t(lang, "cases")}</a>'
        f'<a href="/search?lang={lang}">{t(lang, "search")}</a>'
        f'<a href="/compliance?lang={lang}">{t(lang, "compliance")}</a>'
        f'<a href="{escape(here + join)}lang={other}" lang="{other}">{t(lang, "switch")}</a>'
        f"</header><main><h2>{escape(title)}</h2>{body}</main></body></html>"
    )


def _findings(lang: str, case: events_pb2.Case) -> str:
    def one(count: events_pb2.FindingCount) -> str:
        serious = count.finding == events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT
        label = escape(FINDINGS[lang].get(count.finding, "?"))
        return f'<span class="{"serious" if serious else ""}">{label} ({count.count})</span>'

    return ", ".join(one(count) for count in case.findings)


def _sender(lang: str, case: events_pb2.Case) -> str:
    if case.sender_id:
        return escape(case.sender_id)
    return f'<span class="muted">{t(lang, "phone")}</span>'


def _kind(lang: str, case: events_pb2.Case) -> str:
    declared = case.kind == events_pb2.CASE_KIND_DECLARED_SENDER
    return t(lang, "declared" if declared else "informal")


def _opening(lang: str, case: events_pb2.Case) -> str:
    by_opt_out = case.opened_by == events_pb2.CASE_OPENING_SENT_AFTER_OPT_OUT
    return t(lang, "by_opt_out" if by_opt_out else "by_threshold")


def _channel(channel: int) -> str:
    return escape(events_pb2.Channel.Name(channel).removeprefix("CHANNEL_"))


def cases_page(
    lang: str,
    cases: Sequence[events_pb2.Case],
    informal: Sequence[tuple[str, str, int, bool]],
) -> str:
    """The cases ranked, and the undeclared senders most complained about."""
    rows = "".join(
        f'<tr><td><a href="/case/{quote(c.case_id)}?lang={lang}">{escape(c.reference)}</a></td>'
        f'<td>{_kind(lang, c)}<br><span class="muted">{_opening(lang, c)}</span></td>'
        f"<td>{_sender(lang, c)}</td><td>{c.complaint_count}</td><td>{_findings(lang, c)}</td>"
        f"<td>{when(c.opened_time)}</td><td>{escape(', '.join(c.party_ids))}</td></tr>"
        for c in cases
    )
    table = (
        f'<table id="cases"><tr><th>{t(lang, "reference")}</th><th>{t(lang, "kind")}</th>'
        f"<th>{t(lang, 'sender')}</th><th>{t(lang, 'complaints')}</th>"
        f"<th>{t(lang, 'findings')}</th><th>{t(lang, 'opened')}</th>"
        f"<th>{t(lang, 'parties')}</th></tr>{rows}</table>"
        if cases
        else f"<p>{t(lang, 'none')}</p>"
    )
    top = "".join(
        f"<tr><td>{escape(sender) or t(lang, 'phone') + ' …' + escape(subject[-6:])}</td>"
        f"<td>{count}</td><td>{t(lang, 'case_open' if opened else 'no_case')}</td></tr>"
        for sender, subject, count, opened in informal
    )
    informal_table = (
        f'<section><h3>{t(lang, "informal_top")}</h3><table id="informal"><tr>'
        f"<th>{t(lang, 'sender')}</th><th>{t(lang, 'complaints')}</th><th></th></tr>{top}</table>"
        "</section>"
        if informal
        else ""
    )
    return page(lang, TEXTS[lang]["ranked"], table + informal_table, here="/")


def case_page(lang: str, answer: regulator_pb2.GetCaseResponse, *, may_export_full: bool) -> str:
    """One case: its summary, each complaint with its timeline, the export buttons."""
    case = answer.case
    quoted = quote(case.case_id)
    exports = (
        f'<section id="export"><a class="button" href="/case/{quoted}/export.zip">'
        f"{t(lang, 'export')}</a>"
    )
    if may_export_full:
        exports += (
            f' <a class="button secondary" href="/case/{quoted}/export.zip?full=1">'
            f"{t(lang, 'export_full')}</a>"
        )
    exports += "</section>"
    summary = (
        f'<p><span class="tag">{_kind(lang, case)}</span> '
        f"{t(lang, 'sender')}: <strong>{_sender(lang, case)}</strong> · "
        f"{t(lang, 'complaints')}: {case.complaint_count} · {t(lang, 'opened')} "
        f"{when(case.opened_time)} ({_opening(lang, case)})<br>"
        f"{t(lang, 'parties')}: {escape(', '.join(case.party_ids))}<br>"
        f"{t(lang, 'findings')}: {_findings(lang, case)}</p>"
    )
    items = []
    for complaint in answer.complaints:
        assessed = complaint.assessment
        steps = "".join(
            f'<li><time>{when(e.time)}</time> — <span dir="auto">{escape(e.detail)}</span></li>'
            for e in complaint.timeline
        )
        findings = ", ".join(escape(FINDINGS[lang].get(f, "?")) for f in assessed.findings)
        items.append(
            f'<section class="complaint" id="{escape(assessed.reference)}">'
            f"<h3>{escape(assessed.reference)} — {findings}</h3>"
            f"<p>{t(lang, 'complainant')}: <bdi>{escape(complaint.complainant)}</bdi> · "
            f"{t(lang, 'origin')}: <bdi>{escape(complaint.origin or '—')}</bdi> · "
            f"{escape(complaint.party_id)}</p>"
            f'<p>{t(lang, "text")}: <q dir="auto">{escape(complaint.text)}</q></p>'
            f'<h4>{t(lang, "timeline")}</h4><ol class="timeline">{steps}</ol></section>'
        )
    return page(
        lang,
        f"{TEXTS[lang]['reference']} {case.reference}",
        summary + exports + "".join(items),
        here=f"/case/{quoted}",
    )


def search_page(lang: str, query: str, answer: regulator_pb2.SearchRequestsResponse | None) -> str:
    """The search form and, after a search, the citizen's history and who looked at it."""
    form = (
        f'<form class="inline" method="post" action="/search?lang={lang}">'
        f'<label for="q">{t(lang, "search_label")}</label>'
        f'<input id="q" name="q" value="{escape(query)}" autocomplete="off">'
        f'<button type="submit">{t(lang, "search_go")}</button></form>'
    )
    if answer is None:
        return page(lang, TEXTS[lang]["search"], form, here="/search")
    rows = "".join(
        f'<tr><td><code>{escape(r.event_id)}</code><br><span class="muted">'
        f"{escape(r.party_id)} · {_channel(r.channel)}</span></td>"
        f"<td>{t(lang, 'stop' if r.action == events_pb2.ACTION_OPT_OUT else 'start')}</td>"
        f"<td>{escape(r.sender_id) if r.sender_id else t(lang, 'all')}</td>"
        f"<td>{when(r.action_time)}</td><td>{when(r.decided_time)}</td>"
        f"<td>{t(lang, 'done') if r.proof.done else t(lang, 'pending')}"
        + "".join(
            f'<br><span class="muted">{escape(d.party_id)}: {when(d.applied_time)}</span>'
            for d in r.proof.deliveries
        )
        + "</td></tr>"
        for r in answer.requests
    )
    complaints = "".join(
        f"<li>{escape(c.reference)} — {escape(c.sender_id or '—')} — "
        f"{escape(FINDINGS[lang].get(c.finding, '?'))}</li>"
        for c in answer.complaints
    )
    audit = "".join(
        f"<tr><td>{escape(a.party_id)}</td><td>{when(a.time)}</td>"
        f"<td>{escape(a.method.rsplit('/', 1)[-1])} {escape(a.detail)}</td></tr>"
        for a in answer.audit
    )
    body = (
        form
        + f'<p>{t(lang, "subject")}: <code id="subject">{escape(answer.subject)}</code></p>'
        + f'<h3>{t(lang, "requests")}</h3><table id="requests"><tr><th></th>'
        f"<th>{t(lang, 'action')}</th><th>{t(lang, 'scope')}</th><th>{t(lang, 'acted')}</th>"
        f"<th>{t(lang, 'decided')}</th><th>{t(lang, 'proof')}</th></tr>{rows}</table>"
        + (
            f'<h3>{t(lang, "complaints")}</h3><ul id="complaints">{complaints}</ul>'
            if complaints
            else ""
        )
        + f'<h3>{t(lang, "audit")}</h3><table id="audit"><tr><th>{t(lang, "who")}</th>'
        f"<th>{t(lang, 'when')}</th><th>{t(lang, 'what')}</th></tr>{audit}</table>"
    )
    return page(lang, TEXTS[lang]["search"], body, here=f"/search?q={quote(query)}")


_COLOURS = ("#0b4f6c", "#a4161a", "#2a9d8f", "#e9c46a", "#7b2cbf", "#f4a261", "#264653")


def chart(
    answer: regulator_pb2.PartyComplianceResponse, width: int = 720, height: int = 220
) -> str:
    """Each party's p99 propagation per day as a line, with the objective as a dashed line."""
    days = sorted({d.day.ToMilliseconds() for p in answer.parties for d in p.days})
    top = max(
        [answer.objective_ms * 1.2] + [float(d.p99_ms) for p in answer.parties for d in p.days]
    )
    if not days:
        return ""
    left, bottom = 50, height - 30

    def x(day: int) -> float:
        return left + (width - left - 10) * (days.index(day) / max(len(days) - 1, 1))

    def y(ms: float) -> float:
        return bottom - (bottom - 10) * (ms / top)

    lines = []
    for i, party in enumerate(answer.parties):
        points = [(x(d.day.ToMilliseconds()), y(d.p99_ms)) for d in party.days]
        if not points:
            continue
        colour = _COLOURS[i % len(_COLOURS)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        dots = "".join(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>' for px, py in points
        )
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>{dots}'
            f'<text x="{width - 10}" y="{14 + 14 * i}" text-anchor="end" fill="{colour}" '
            f'font-size="12">{escape(party.party_id)}</text>'
        )
    objective = y(answer.objective_ms)
    first = datetime.fromtimestamp(days[0] / 1000, UTC).strftime("%Y-%m-%d")
    last = datetime.fromtimestamp(days[-1] / 1000, UTC).strftime("%Y-%m-%d")
    return (
        f'<svg id="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" style="direction:ltr">'
        f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" '
        'stroke="#999"/>'
        f'<line x1="{left}" y1="{objective:.1f}" x2="{width - 10}" y2="{objective:.1f}" '
        'stroke="#a4161a" stroke-dasharray="4 3"/>'
        f'<text x="4" y="{objective:.1f}" font-size="11">{answer.objective_ms} ms</text>'
        f'<text x="4" y="14" font-size="11">{top:.0f} ms</text>'
        f'<text x="{left}" y="{height - 8}" font-size="11">{first}</text>'
        f'<text x="{width - 10}" y="{height - 8}" font-size="11" text-anchor="end">{last}</text>'
        + "".join(lines)
        + "</svg>"
    )


def compliance_page(lang: str, days: int, answer: regulator_pb2.PartyComplianceResponse) -> str:
    """The compliance table per party, and the chart of propagation times over the period."""
    rows = "".join(
        f"<tr><td>{escape(p.party_id)}</td><td>{p.changes_applied}</td><td>{p.p50_ms}</td>"
        f'<td>{p.p99_ms}</td><td class="{"serious" if p.late else ""}">{p.late}</td>'
        f"<td>{p.complaints_with_findings}</td></tr>"
        for p in answer.parties
    )
    periods = " · ".join(
        f'<a href="/compliance?days={n}&lang={lang}">{n} {t(lang, "days")}</a>'
        for n in (1, 7, 30, 90)
    )
    body = (
        f"<p>{t(lang, 'period')}: {days} {t(lang, 'days')} — {periods} · "
        f"{t(lang, 'objective')}: {answer.objective_ms} ms</p>"
        f'<table id="compliance"><tr><th>{t(lang, "party")}</th><th>{t(lang, "applied")}</th>'
        f"<th>p50 ms</th><th>p99 ms</th><th>{t(lang, 'late')}</th>"
        f"<th>{t(lang, 'with_findings')}</th></tr>{rows}</table>"
        f'<section><h3>{t(lang, "chart")}</h3><div dir="ltr">{chart(answer)}</div></section>'
    )
    return page(lang, TEXTS[lang]["compliance"], body, here=f"/compliance?days={days}")


def error_page(lang: str, status: int, detail: str) -> str:
    """A refusal or a mistake, said plainly, with the way back."""
    return page(
        lang,
        f"{TEXTS[lang]['error']} {status}",
        f'<p id="error">{escape(detail)}</p><p><a href="/?lang={lang}">{t(lang, "back")}</a></p>',
        here="/",
    )
