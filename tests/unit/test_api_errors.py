"""The errors' shared base and kinds (`orchestra/errors.py`): one kind, one answer in both
processes, and a class's kind read as plain class attributes."""

from __future__ import annotations

from orchestra.errors import MODEL_NOT_FOUND, ApiError, ErrorKind
from orchestra.gateway.core import errors as gateway
from orchestra.supervisor import errors as supervisor


def test_a_shared_kind_answers_alike_in_both_processes() -> None:
    ours = gateway.ModelNotFound("m").error()["error"]
    theirs = supervisor.ModelNotFound("no model `m`", "model").error()["error"]
    for field in ("type", "code", "param"):
        assert ours[field] == theirs[field]
    assert gateway.ModelNotFound.status == supervisor.ModelNotFound.status == 404
    assert (ours["type"], ours["code"]) == (MODEL_NOT_FOUND.type, MODEL_NOT_FOUND.code)


def test_the_kind_keyword_sets_the_class_attributes_and_subclasses_inherit_them() -> None:
    class Teapot(ApiError, kind=ErrorKind(418, "teapot_error", "short_and_stout")):
        pass

    class Kettle(Teapot):
        code = "kettle"

    assert (Teapot.status, Teapot.type, Teapot.code) == (418, "teapot_error", "short_and_stout")
    assert (Kettle.status, Kettle.type, Kettle.code) == (418, "teapot_error", "kettle")


def test_a_code_given_to_the_constructor_is_the_instance_s_alone() -> None:
    error = supervisor.EngineError("down", code="engine_lost")
    assert error.error() == {
        "error": {
            "message": "down",
            "type": "service_unavailable",
            "param": None,
            "code": "engine_lost",
        }
    }
    assert supervisor.EngineError.code == "engine_failed"
    assert supervisor.EngineError("down").code == "engine_failed"
