"""Slow actions and the API-backed parts of the control room: training as a background job,
predictions through the running API, rollback through /admin/rollback, token checked by the API."""

from __future__ import annotations

import time

import httpx

from rakuten_mlops.data.categories import load_categories
from tests.ui.apptest import charts, health_line, main_text, metrics, open_app, type_token


def _wait_for_training(at, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = main_text(at)
        if "): succeeded" in text or "): failed" in text:
            return text
        time.sleep(2)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    raise AssertionError(f"training still running after {timeout}s:\n{main_text(at)}")


def test_train_runs_as_a_local_background_job_when_the_api_is_down(ui_env):
    at = type_token(open_app("training"))
    at.button(key="train").click().run()
    assert not at.exception
    assert "(local): running" in main_text(at) or "(local): succeeded" in main_text(at)
    text = _wait_for_training(at)
    assert "(local): succeeded; version 3: " in text, text
    versions = at.main.dataframe[0].value
    assert list(versions["version"])[0] == "3"
    events = at.main.dataframe[-1].value
    assert "trained" in set(events[events["version"] == "3"]["event_type"])


def test_predict_form_shows_category_confidence_and_top_k(api_env, api):
    at = open_app("predict")
    at.text_input(key="designation").input("Piscine tubulaire ronde 366 x 76 cm avec pompe de filtration")
    at.text_area(key="description").input("Piscine hors sol, liner bleu, échelle incluse.")
    at.button(key="classify").click().run()
    assert not at.exception
    text = main_text(at)
    names = {c.name_fr for c in load_categories().values()}
    success = at.main.success[0].value
    assert success.startswith("Category: **")
    assert any(f"**{name}**" in success for name in names), success
    served = httpx.get(f"{api.url}/model").json()["version"]
    shown = metrics(at)
    assert shown["Model version"] == f"v{served}"
    assert shown["Confidence"].endswith("%")
    assert len(charts(at)) == 1  # top-k bar chart
    assert "Prediction failed" not in text
    deadline = time.monotonic() + 15  # the API writes its prediction log in the background
    while time.monotonic() < deadline:
        at.button(key="refresh_predictions").click().run()
        if at.main.dataframe:
            break
        time.sleep(0.5)
    recent = at.main.dataframe[0].value
    assert recent.iloc[0]["model_version"] == served
    assert recent.iloc[0]["category"] in names


def test_predict_with_a_blank_title_is_refused_before_the_api(api_env):
    at = open_app("predict")
    at.text_input(key="designation").input("   ")
    at.button(key="classify").click().run()
    assert "Prediction failed: the designation (product title) is required" in main_text(at)


def test_predict_when_the_api_is_down_says_where_it_looked(ui_env):
    at = open_app("predict")
    at.text_input(key="designation").input("Lot de 100 cartes Pokémon")
    at.button(key="classify").click().run()
    assert "Prediction failed: cannot reach the API at http://127.0.0.1:9" in main_text(at)


def test_overview_with_the_api_up_is_green_and_names_the_served_version(api_env, api):
    served = httpx.get(f"{api.url}/model").json()["version"]
    state, reason = health_line(open_app(), "API")
    assert (state, reason.split(" · ")[0]) == ("ok", f"ready, serving version {served}")


def test_token_is_checked_by_the_api_when_the_control_room_has_none(api_env):
    at = open_app("training")
    assert "admin actions are locked" in at.sidebar.info[0].value
    at = type_token(at, "wrong-token-123")
    assert at.sidebar.info[0].value == "wrong admin token (refused by the API)"
    at = type_token(at)
    assert at.sidebar.success[0].value == "admin token accepted by the API"
    assert not at.button(key="train").disabled


def test_train_through_the_api_shows_the_job_status_until_it_ends(api_env, api):
    """Last in this module: it adds a version to the API's registry."""
    at = type_token(open_app("training"))
    at.button(key="train").click().run()
    assert not at.exception
    assert "(api): running" in main_text(at) or "(api): succeeded" in main_text(at), main_text(at)
    text = _wait_for_training(at)
    assert "(api): succeeded; version 3: " in text, text
    assert list(at.main.dataframe[0].value["version"])[0] == "3"
