// A team project in the page: the sign-in form (a project without users has none), who is
// signed in, their images, and for reviewers and admins the review queue and assignment.

import { $, api, state } from "./state.js";

// Resolves once the page may call the API: at once in a single-user project or with a valid
// session cookie, else when the form's name and password are right.
export async function signIn() {
  const { body } = await api("/me");
  if (!body.team) return;
  if (body.user) {
    setUser(body.user);
    return;
  }
  $("login").hidden = false;
  $("login-name").focus();
  await new Promise((resolve) => {
    $("login-form").onsubmit = async (e) => {
      e.preventDefault();
      const json = { name: $("login-name").value, password: $("login-password").value };
      try {
        const { body: user } = await api("/login", { json });
        $("login-password").value = "";
        $("login").hidden = true;
        setUser(user);
        resolve();
      } catch (error) {
        $("login-error").textContent = error.message;
      }
    };
  });
}

function setUser(user) {
  state.user = user;
  $("author").hidden = true; // masks and reviews are signed with the user's name
  $("team").hidden = false;
  $("user-line").textContent = `${user.name} (${user.role})`;
  $("reviewer-tools").hidden = user.role === "annotator";
  document.body.dataset.user = user.name;
  document.body.dataset.role = user.role;
}

// The team, for the assignment menu (reviewers and admins).
export async function loadTeam() {
  const select = $("assign");
  select.replaceChildren(new Option("assigned to nobody", ""));
  if (state.user.role === "annotator") return;
  const { body } = await api("/users");
  for (const user of body) select.append(new Option(`→ ${user.name} (${user.role})`, user.id));
}

export async function nextToReview() {
  const { body } = await api("/review");
  return body.next_id;
}

$("sign-out").onclick = async () => {
  await api("/logout", { method: "POST" });
  location.reload();
};
