"""The Predict page's explanation: what the running API answers to ``?explain=true``, shown as
two tables (the n-grams that pushed the predicted class most, the runner-up's strongest evidence)."""

from __future__ import annotations

import re

import httpx

from tests.ui.apptest import main_text, open_app

PRODUCT = {
    "designation": "Piscine tubulaire ronde 366 x 76 cm avec pompe de filtration",
    "description": "Piscine hors sol, liner bleu, échelle incluse.",
}


def test_predict_page_explains_the_prediction_when_asked(api_env, api):
    at = open_app("predict")
    at.text_input(key="designation").input(PRODUCT["designation"])
    at.text_area(key="description").input(PRODUCT["description"])
    at.button(key="classify").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Why this category" not in main_text(at)  # not asked: not shown
    # the whole id, for POST /feedback; the metric shows its tail (ids start with their time)
    full_id = re.search(r"POST /feedback`: `([0-9a-f]{32}-[0-9a-f]{3})`", main_text(at)).group(1)
    assert at.main.metric[2].value == full_id[-12:]

    at.checkbox(key="explain").check()
    at.button(key="classify").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = main_text(at)
    expected = httpx.post(f"{api.url}/predict", params={"k": 5, "explain": "true"}, json=PRODUCT).json()
    explanation = expected["explanation"]
    assert "Why this category" in text
    assert f"temperature {explanation['temperature']:.3g}" in text
    tables = iter(at.main.dataframe)
    for title, part in (
        ("Pushed the prediction most", "predicted"),
        ("Strongest evidence for the runner-up", "runner_up"),
    ):
        evidence = explanation[part]
        assert f"**{title}: {evidence['category']}** ({evidence['prdtypecode']})" in text
        listed = sum(t["contribution"] for t in evidence["tokens"])
        assert (
            f"score {evidence['score']:.3f} = intercept {evidence['intercept']:.3f} + listed {listed:.3f}"
            in text
        )
        if evidence["tokens"]:
            shown = next(tables).value
            assert shown["feature"].tolist() == [t["feature"] for t in evidence["tokens"]]
            assert shown["contribution"].tolist() == [t["contribution"] for t in evidence["tokens"]]
        else:
            assert "No n-gram of this product pushes toward this class." in text
    assert explanation["predicted"]["prdtypecode"] == expected["prdtypecode"]
    assert explanation["predicted"]["tokens"], "a real pool product has n-grams pointing to its class"
    assert at.main.success[0].value.startswith(f"Category: **{expected['category']}**")
