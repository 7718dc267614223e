/* The shell: login and logout, hash routes (#/overview, #/models…), page lifecycle. */
"use strict";

(function (LG) {
  const ROUTES = ["overview", "models", "plugins", "playground", "benchmarks", "convert", "logs", "keys", "alerts"];
  let initialised = false;

  LG.router = {
    current: null,
    go(route) { location.hash = `#/${route}`; },
  };

  function route() {
    const name = (location.hash.replace(/^#\/?/, "") || "overview").split("?")[0];
    return ROUTES.includes(name) ? name : "overview";
  }

  function showPage() {
    if (!LG.session.active) return;
    const name = route();
    const previous = LG.router.current;
    if (previous && previous !== name && LG.pages[previous] && LG.pages[previous].hide) LG.pages[previous].hide();
    LG.router.current = name;
    for (const section of document.querySelectorAll(".page")) section.hidden = section.dataset.page !== name;
    for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.route === name);
    document.title = `LLaMA GPU · ${name[0].toUpperCase()}${name.slice(1)}`;
    const page = LG.pages[name];
    if (page && page.show) page.show();
  }

  function enterApp() {
    const user = LG.session.user || {};
    LG.$("login-view").hidden = true;
    LG.$("app-view").hidden = false;
    LG.$("user-name").textContent = user.username || "signed in";
    LG.$("user-role").textContent = user.role || "";
    LG.$("logout-btn").hidden = LG.session.open; // nothing to sign out of
    if (!initialised) {
      for (const name of ROUTES) if (LG.pages[name] && LG.pages[name].init) LG.pages[name].init();
      initialised = true;
    } else {
      LG.pages.overview.init(); // charts are rebuilt after a logout
    }
    LG.live.connect();
    LG.pages.alerts.start();
    LG.fetchModels().catch(() => {});
    LG.router.current = null;
    showPage();
  }

  function leaveApp(message) {
    LG.live.disconnect();
    if (LG.router.current && LG.pages[LG.router.current].hide) LG.pages[LG.router.current].hide();
    for (const name of ROUTES) if (LG.pages[name] && LG.pages[name].reset) LG.pages[name].reset();
    LG.router.current = null;
    LG.session.clear();
    LG.$("app-view").hidden = true;
    LG.$("login-view").hidden = false;
    LG.$("login-password").value = "";
    const box = LG.$("login-error");
    box.textContent = message || "";
    box.hidden = !message;
    LG.$(LG.$("login-username").value ? "login-password" : "login-username").focus();
  }

  LG.onUnauthorized = (error) => leaveApp(`Your session ended (${error.message}). Please sign in again.`);

  async function submitLogin(event) {
    event.preventDefault();
    const username = LG.$("login-username").value.trim();
    const password = LG.$("login-password").value;
    const box = LG.$("login-error");
    box.hidden = true;
    if (!username || !password) {
      box.textContent = "Enter your user name and password.";
      box.hidden = false;
      return;
    }
    const button = LG.$("login-submit");
    button.disabled = true;
    button.textContent = "Signing in…";
    try {
      await LG.login(username, password);
      enterApp();
    } catch (error) {
      box.textContent = error.status === 0 ? error.message : `${error.message} (${error.code})`;
      box.hidden = false;
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    LG.$("login-form").addEventListener("submit", submitLogin);
    LG.$("logout-btn").addEventListener("click", async () => { await LG.logout(); leaveApp(); });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !LG.$("modal").hidden) LG.$("modal-cancel").click();
    });
    window.addEventListener("hashchange", showPage);
    if (LG.session.open && !LG.openAccess()) LG.session.clear(); // the server requires logins again
    if (LG.session.token) {
      enterApp();
      return;
    }
    if (LG.openAccess()) {
      LG.session.saveOpen();
      enterApp();
    } else {
      leaveApp();
    }
  });
})(window.LG);
