"""The JSON API's team part: sign-in, users, image assignment, the reviewer's queue
(``segany.server.users`` says who may do what)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from segany.errors import InputError
from segany.server import schemas
from segany.server.state import state_of
from segany.server.users import (
    SESSION_COOKIE,
    SESSION_DAYS,
    Unauthorized,
    require,
    user_of,
)
from segany.server.views import image_out

router = APIRouter()


# ----- sign-in --------------------------------------------------------------------------------
@router.post(
    "/login",
    response_model=schemas.UserOut,
    summary="Sign in (sets the session cookie)",
    responses={401: {"description": "wrong name or password"}, 429: {"description": "locked"}},
)
def login(request: Request, response: Response, body: schemas.LoginIn) -> dict[str, Any]:
    users = state_of(request).users
    if not users.team():
        raise Unauthorized("this project has no users: nobody needs to sign in")
    token, user = users.login(body.name, body.password)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_DAYS * 86_400,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return user


@router.post("/logout", status_code=204, summary="Sign out (ends this session)")
def logout(request: Request) -> Response:
    state_of(request).users.logout(request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=schemas.MeOut, summary="Who is signed in")
def me(request: Request) -> dict[str, Any]:
    users = state_of(request).users
    team = users.team()
    user = users.user_for(request.cookies.get(SESSION_COOKIE)) if team else None
    return {"team": team, "user": user}


# ----- users ----------------------------------------------------------------------------------
@router.get("/users", response_model=list[schemas.UserOut], summary="The team")
def list_users(request: Request) -> list[dict[str, Any]]:
    return state_of(request).users.all()  # type: ignore[no-any-return]


@router.post(
    "/users",
    status_code=201,
    response_model=schemas.UserOut,
    responses={409: {"description": "a user has that name"}},
)
def add_user(request: Request, body: schemas.UserIn) -> dict[str, Any]:
    """Add a user (admins only; the first user of a project may be added by anyone on it,
    since a single-user project has no sign-in: that user must be an admin)."""
    users = state_of(request).users
    if user_of(request) is None and body.role != "admin":
        raise InputError("a project's first user is an admin (role 'admin'), who adds the team")
    require(request, doing="adding a user")
    return users.add(body.name, body.role, body.password)  # type: ignore[no-any-return]


@router.patch("/users/{user_id}", response_model=schemas.UserOut)
def update_user(request: Request, user_id: int, body: schemas.UserPatch) -> dict[str, Any]:
    """A new role (admins) and/or password (admins, or the user for their own)."""
    user = user_of(request)
    if body.role is not None or user is None or user["id"] != user_id:
        require(request, doing="changing another user or a role")
    users = state_of(request).users
    return users.update(user_id, body.role, body.password)  # type: ignore[no-any-return]


@router.delete("/users/{user_id}", status_code=204)
def delete_user(request: Request, user_id: int) -> Response:
    """Remove a user: their images become unassigned, their masks keep their name."""
    require(request, doing="removing a user")
    state_of(request).users.delete(user_id)
    return Response(status_code=204)


# ----- assignment and review --------------------------------------------------------------------
@router.put("/images/{image_id}/assignee", response_model=schemas.ImageOut)
def assign(request: Request, image_id: int, body: schemas.AssignIn) -> schemas.ImageOut:
    """Assign an image to a user (None: to nobody); reviewers and admins."""
    require(request, "reviewer", doing="assigning images")
    st = state_of(request)
    if body.user_id is not None:
        st.users.get(body.user_id)  # 404 for an unknown user
    row = st.notes.assign(image_id, body.user_id)
    return image_out(row, st.notes.tally(image_id), request=request)


@router.get(
    "/review",
    response_model=schemas.ImageList,
    summary="The reviewer's queue: images with masks or proposals waiting for a decision",
)
def review_queue(request: Request) -> schemas.ImageList:
    """Images (not skipped) that have proposals or unreviewed masks, oldest first;
    ``next_id`` is the first of them."""
    st = state_of(request)
    rows, counts = st.notes.images()
    waiting = [
        (r, t) for r, t in rows if r.status != "skipped" and (t["proposals"] or t["unreviewed"])
    ]
    names = st.users.names()
    return schemas.ImageList(
        images=[image_out(r, t, names=names) for r, t in waiting],
        counts=counts,
        next_id=waiting[0][0].id if waiting else None,
    )
