"""The developer portal in a real browser: the seed's story, bad input, and a page on a second
origin. Run by services/appreg/tests/portal (never on its own): argv[1] is a JSON object

    {"scenario": "story" | "second_origin" | "oidc_sign_in", "base": "http://127.0.0.1:PORT",
     "chromium": "/usr/bin/chromium", "axe": ".../axe.min.js", "out": "DIR", ...}

Every page is checked with axe-core (no serious or critical violation) and photographed into
`out`; a Content-Security-Policy violation or an uncaught page error fails the run. Exits
non-zero with the reason on the first failure.
"""

import json
import re
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Generous: the suite runs beside the whole workspace's tests on two cores.
expect.set_options(timeout=30_000)


class Run:
    def __init__(self, settings, context):
        self.settings = settings
        self.context = context
        self.out = Path(settings["out"])
        self.out.mkdir(parents=True, exist_ok=True)
        self.axe = Path(settings["axe"]).read_text()
        self.shots = 0
        self.problems = []

    def page(self, name):
        """A new tab: its own sessionStorage, so one signed-in user."""
        page = self.context.new_page()
        page.on("console", lambda m: self._console(name, m))
        page.on("pageerror", lambda e: self.problems.append(f"{name}: uncaught page error: {e}"))
        return page

    def _console(self, name, message):
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.problems.append(f"{name}: CSP violation: {text}")

    def check(self, page, step):
        """axe-core on the page as it is, then a screenshot; fails on serious/critical findings."""
        if self.problems:
            raise AssertionError("; ".join(self.problems))
        # Runtime evaluation by the driver is not subject to the page's CSP (no inline script).
        page.evaluate(self.axe + "\n;0")
        violations = page.evaluate(
            """async () => {
                const result = await axe.run(document, {resultTypes: ['violations']});
                return result.violations
                    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                    .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                                  nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' '))}));
            }"""
        )
        self.shots += 1
        path = self.out / f"{self.shots:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"step {self.shots:02d} {step}: axe serious/critical violations: {len(violations)}; {path}", flush=True)
        if violations:
            raise AssertionError(f"axe-core at {step}: {json.dumps(violations, indent=1)}")


def sign_in(page, base, user, admin=False):
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User", exact=True).fill(user)
    if admin:
        page.get_by_label("Administrator", exact=True).check()
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="My applications")).to_be_visible()
    expect(page.get_by_text(re.compile(f"Signed in as {user}"))).to_be_visible()


def field_error(page, label):
    """The error text shown beside the control labelled `label` (its aria-describedby)."""
    control = page.get_by_label(label, exact=True)
    described = control.get_attribute("aria-describedby") or ""
    error_id = [i for i in described.split() if i.endswith("-error")][0]
    return page.locator(f"#{error_id}")


def story(run):
    base = run.settings["base"]
    alice = run.page("alice")

    # 1. A user creates a simple application.
    sign_in(alice, base, "alice")
    run.check(alice, "my-applications")
    alice.get_by_role("link", name="Create application").first.click()
    expect(alice.get_by_role("heading", name="Create application")).to_be_visible()
    # Bad input: the field's error shows beside the field.
    alice.get_by_role("button", name="Create").click()
    expect(field_error(alice, "Name")).not_to_be_empty()
    expect(alice.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")
    run.check(alice, "field-error-beside-its-field")
    alice.get_by_label("Name", exact=True).fill("Team dashboard")
    alice.get_by_label("Description", exact=True).fill("Our team's dashboard")
    alice.get_by_label("Type", exact=True).select_option("simple")
    alice.get_by_label("Client ID", exact=True).fill("team-dashboard")
    alice.get_by_role("button", name="Create").click()
    expect(alice.get_by_role("heading", name="Team dashboard", level=1)).to_be_visible()
    run.check(alice, "simple-application")
    # Bad input: a problem's detail (the client id is taken).
    alice.goto(f"{base}/#/applications/new")
    alice.get_by_label("Name", exact=True).fill("Copy")
    alice.get_by_label("Type", exact=True).select_option("simple")
    alice.get_by_label("Client ID", exact=True).fill("team-dashboard")
    alice.get_by_role("button", name="Create").click()
    expect(alice.get_by_role("alert").filter(has_text="team-dashboard")).to_be_visible()
    run.check(alice, "problem-detail")

    # 2. An administrator enables DCR and adds the provider.
    ada = run.page("ada")
    sign_in(ada, base, "ada", admin=True)
    ada.get_by_role("link", name="Client registration").click()
    dcr = ada.get_by_label("Dynamic client registration", exact=True)
    expect(dcr).not_to_be_checked()
    dcr.check()
    ada.get_by_role("button", name="Save settings").click()
    expect(ada.get_by_text("Settings saved.")).to_be_visible()
    run.check(ada, "dcr-enabled")
    ada.get_by_role("link", name="Providers").click()
    ada.get_by_label("Name", exact=True).fill("Test OIDC provider")
    ada.get_by_label("Discovery endpoint", exact=True).fill(run.settings["discovery"])
    ada.get_by_label("Registration mode", exact=True).select_option("INITIAL_ACCESS_TOKEN")
    ada.get_by_label("Initial access token", exact=True).fill(run.settings["initial_access_token"])
    ada.get_by_label("Renews client secrets", exact=True).check()
    ada.get_by_label("Renewal endpoint", exact=True).fill("{registration_endpoint}/{client_id}/renew_secret")
    ada.get_by_label("Default provider", exact=True).check()
    ada.get_by_role("button", name="Add provider").click()
    expect(ada.get_by_role("cell", name="Test OIDC provider", exact=True)).to_be_visible()
    # Validated again (an update keeping its stored token, which must still be accepted).
    ada.get_by_role("button", name="Validate Test OIDC provider").click()
    expect(ada.get_by_text("Test OIDC provider answers: valid.")).to_be_visible()
    run.check(ada, "provider-added")
    ada.get_by_role("link", name="Catalogue").click()
    ada.get_by_label("API name", exact=True).fill("Weather")
    ada.get_by_role("button", name="Add API").click()
    expect(ada.get_by_role("heading", name="Weather")).to_be_visible()
    ada.get_by_label("Plan name", exact=True).fill("Gold")
    ada.get_by_label("Security", exact=True).select_option("API_KEY")
    ada.get_by_label("Validation", exact=True).select_option("MANUAL")
    ada.get_by_role("button", name="Add plan").click()
    expect(ada.get_by_role("cell", name="Gold", exact=True)).to_be_visible()
    run.check(ada, "catalogue")

    # 3. The user creates a backend-to-backend application and sees it registered live.
    alice.get_by_role("link", name="My applications").click()
    alice.get_by_role("navigation").get_by_role("link", name="Create application").click()
    alice.get_by_label("Name", exact=True).fill("Billing backend")
    alice.get_by_label("Type", exact=True).select_option("backend_to_backend")
    expect(alice.get_by_label("Client credentials", exact=False)).to_be_checked()
    alice.get_by_role("button", name="Create").click()
    expect(alice.get_by_role("heading", name="Billing backend", level=1)).to_be_visible()
    # No reload from here: a marker on the window survives only if the page is never reloaded.
    alice.evaluate("window.__noReload = true")
    expect(alice.locator("#live")).to_have_text("Live updates: connected")
    expect(alice.locator("#registration-state")).to_contain_text("REGISTERED", timeout=60_000)
    expect(alice.locator("#registration-state")).not_to_contain_text("REGISTERING")
    assert alice.evaluate("window.__noReload === true"), "the page was reloaded"
    run.check(alice, "registered-live")
    alice.get_by_role("button", name="Show credentials").click()
    secret = alice.get_by_label("Client secret", exact=True)
    expect(secret).not_to_have_value("")
    alice.get_by_role("button", name="Copy client secret").click()
    expect(alice.get_by_text("Client secret copied.")).to_be_visible()
    assert alice.evaluate("navigator.clipboard.readText()") == secret.input_value()
    first_secret = secret.input_value()
    run.check(alice, "credentials")
    plan = alice.get_by_label("Plan", exact=True)
    plan.select_option(plan.locator("option", has_text="Weather / Gold").get_attribute("value"))
    alice.get_by_role("button", name="Subscribe").click()
    expect(alice.get_by_role("cell", name=re.compile("PENDING"))).to_be_visible()
    run.check(alice, "subscribed")

    # 4. The administrator accepts the subscription; the user's page follows live.
    ada.get_by_role("link", name="Pending subscriptions").click()
    ada.get_by_role("button", name=re.compile("Accept Billing backend")).click()
    expect(ada.get_by_text("No subscription is waiting.")).to_be_visible()
    run.check(ada, "accepted")
    expect(alice.get_by_role("cell", name=re.compile("ACCEPTED"))).to_be_visible()
    expect(alice.get_by_role("button", name=re.compile("Revoke key"))).to_be_visible()
    assert alice.evaluate("window.__noReload === true"), "the page was reloaded"
    run.check(alice, "subscription-accepted")

    # Keys: one renewed (the old one stays valid for the grace period), then one revoked.
    alice.get_by_role("button", name="Renew key of Weather").click()
    revoke = alice.get_by_role("button", name=re.compile("Revoke key"))
    expect(revoke).to_have_count(2)
    revoke.first.click()
    expect(alice.get_by_role("button", name=re.compile("Revoke key"))).to_have_count(1)
    run.check(alice, "keys-renewed-and-revoked")

    # The client secret renewed at the provider (by the saga): the page follows the operation
    # live; once it is done, the credentials show the new secret.
    alice.get_by_role("button", name="Renew secret").click()
    expect(alice.get_by_role("definition").filter(has_text="RENEW_SECRET DONE")).to_be_visible(timeout=60_000)
    renewed = alice.get_by_label("Client secret", exact=True)
    for attempt in range(5):
        # A live update that re-renders the page in between hides the credentials: show again.
        alice.get_by_role("button", name="Show credentials").click()
        try:
            expect(renewed).not_to_have_value("", timeout=5_000)
            expect(renewed).not_to_have_value(first_secret, timeout=5_000)
            break
        except AssertionError:
            if attempt == 4:
                raise
    run.check(alice, "secret-renewed")

    # Edit the description.
    alice.get_by_label("Description", exact=True).fill("Invoices and receipts")
    alice.get_by_role("form", name="Edit application").get_by_role("button", name="Save").click()
    expect(alice.get_by_role("definition").filter(has_text="Invoices and receipts")).to_be_visible()
    run.check(alice, "edited")

    # Members: a user found by searching, then given another role; notification settings.
    alice.get_by_label("Find user", exact=True).fill("ad")
    expect(alice.locator("#user-options option[value='ada']")).to_have_count(1)
    alice.get_by_label("Find user", exact=True).fill("ada")
    alice.get_by_role("button", name="Add member").click()
    expect(alice.get_by_role("combobox", name="Role of ada")).to_have_value("USER")
    alice.get_by_role("combobox", name="Role of ada").select_option("OWNER")
    alice.get_by_role("button", name="Change role of ada").click()
    expect(alice.get_by_role("cell", name="OWNER", exact=True)).to_be_visible()
    alice.get_by_label("E-mail", exact=True).fill("alice@example.com")
    alice.get_by_label("Subscription accepted", exact=True).check()
    alice.get_by_role("button", name="Save notifications").click()
    expect(alice.get_by_text("Notification settings saved.")).to_be_visible()
    run.check(alice, "members-and-notifications")

    # 5. The user archives the application.
    alice.get_by_role("button", name="Archive application").click()
    alice.get_by_role("button", name="Confirm archive").click()
    expect(alice.get_by_role("heading", name="My applications")).to_be_visible()
    expect(alice.get_by_role("link", name="Team dashboard")).to_be_visible()
    expect(alice.get_by_role("link", name="Billing backend")).to_have_count(0)
    run.check(alice, "archived")

    # 6. The administrator restores it.
    ada.get_by_role("link", name="Archived applications").click()
    ada.get_by_role("button", name="Restore Billing backend").click()
    expect(ada.get_by_text("Billing backend is restored.")).to_be_visible()
    run.check(ada, "restored")
    ada.get_by_role("link", name="Audit").click()
    expect(ada.get_by_role("cell", name="ApplicationRestored", exact=True).first).to_be_visible()
    run.check(ada, "audit")
    ada.get_by_role("link", name="My applications").click()
    ada.get_by_role("link", name="Billing backend").click()
    expect(ada.get_by_role("heading", name="Billing backend", level=1)).to_be_visible()
    expect(ada.get_by_role("heading", name="History")).to_be_visible()
    expect(ada.get_by_text("ApplicationRestored")).to_be_visible()
    run.check(ada, "restored-application")

    # A network error offers a retry.
    run.context.set_offline(True)
    alice.get_by_role("button", name="Search").click()
    expect(alice.get_by_role("button", name="Retry")).to_be_visible()
    run.check(alice, "network-error-retry")
    run.context.set_offline(False)
    alice.get_by_role("button", name="Retry").click()
    expect(alice.get_by_role("button", name="Retry")).to_have_count(0)
    expect(alice.get_by_role("link", name="Team dashboard")).to_be_visible()

    # An administrator rejects a request with a reason, and the user sees it.
    alice.get_by_role("link", name="Team dashboard").click()
    expect(alice.get_by_role("heading", name="Team dashboard", level=1)).to_be_visible()
    plan = alice.get_by_label("Plan", exact=True)
    plan.select_option(plan.locator("option", has_text="Weather / Gold").get_attribute("value"))
    alice.get_by_role("button", name="Subscribe").click()
    expect(alice.get_by_role("cell", name=re.compile("PENDING"))).to_be_visible()
    ada.get_by_role("link", name="Pending subscriptions").click()
    ada.get_by_label("Reason for rejecting Team dashboard", exact=True).fill("Not for dashboards")
    ada.get_by_role("button", name=re.compile("Reject Team dashboard")).click()
    # (The restored application's subscription waits again: a restore reopens it as PENDING.)
    expect(ada.get_by_role("button", name=re.compile("Reject Team dashboard"))).to_have_count(0)
    expect(ada.get_by_role("button", name=re.compile("Accept Billing backend"))).to_be_visible()
    expect(alice.get_by_role("cell", name=re.compile("REJECTED Not for dashboards"))).to_be_visible()
    run.check(alice, "subscription-rejected")

    # Ownership transferred to a new member; then the new primary owner removes the user.
    alice.get_by_label("Find user", exact=True).fill("ada")
    alice.get_by_role("button", name="Add member").click()
    expect(alice.get_by_role("combobox", name="Role of ada")).to_have_value("USER")
    alice.get_by_label("New primary owner", exact=True).select_option("ada")
    alice.get_by_label("Former primary owner's role", exact=True).select_option("OWNER")
    alice.get_by_role("button", name="Transfer ownership").click()
    expect(alice.get_by_role("cell", name="PRIMARY_OWNER", exact=True)).to_be_visible()
    expect(alice.get_by_role("definition").filter(has_text=re.compile("^OWNER$"))).to_be_visible()
    run.check(alice, "ownership-transferred")
    ada.get_by_role("link", name="My applications").click()
    ada.get_by_role("link", name="Team dashboard").click()
    expect(ada.get_by_role("heading", name="Team dashboard", level=1)).to_be_visible()
    ada.get_by_role("button", name="Remove alice").click()
    expect(ada.get_by_role("button", name="Remove alice")).to_have_count(0)
    run.check(ada, "member-removed")
    alice.get_by_role("link", name="My applications").click()
    expect(alice.get_by_role("heading", name="My applications")).to_be_visible()
    expect(alice.get_by_role("link", name="Team dashboard")).to_have_count(0)


def second_origin(run):
    """A page on another origin calls the api with fetch and follows its events with
    EventSource and a ticket."""
    page = run.page("second-origin")
    page.goto(run.settings["page"])
    expect(page.locator("#result")).to_have_text("created", timeout=30_000)
    expect(page.locator("#events")).to_contain_text("ApplicationCreated From another origin", timeout=30_000)
    run.check(page, "second-origin")
    # An origin the api does not allow: the browser blocks the call.
    blocked = run.page("disallowed-origin")
    blocked.goto(run.settings["blocked_page"])
    expect(blocked.locator("#result")).to_have_text("blocked", timeout=30_000)
    run.check(blocked, "disallowed-origin")


def oidc_sign_in(run):
    """Production sign-in: the issuer's login and consent pages, back with a code (PKCE)."""
    base = run.settings["base"]
    page = run.page("olivia")
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    run.check(page, "oidc-sign-in")
    page.get_by_role("button", name="Sign in with your organisation").click()
    # The provider's own pages (development interactions): any login, then consent.
    page.locator("input[name=login]").fill("olivia")
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="My applications")).to_be_visible()
    expect(page.get_by_text("Signed in as olivia")).to_be_visible()
    assert "code=" not in page.url and "state=" not in page.url, page.url
    # The issuer's access token is the api's: the user creates an application.
    page.get_by_role("navigation").get_by_role("link", name="Create application").click()
    page.get_by_label("Name", exact=True).fill("Olivia's tool")
    page.get_by_label("Type", exact=True).select_option("simple")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Olivia's tool", level=1)).to_be_visible()
    expect(page.locator("#live")).to_have_text("Live updates: connected")
    run.check(page, "oidc-signed-in")


def main():
    settings = json.loads(sys.argv[1])
    # A fresh profile (user-data-dir) per run, never the machine's.
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="appreg-chromium-") as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=settings["chromium"],
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=settings["base"])
        run = Run(settings, context)
        try:
            {"story": story, "second_origin": second_origin, "oidc_sign_in": oidc_sign_in}[settings["scenario"]](run)
            if run.problems:
                raise AssertionError("; ".join(run.problems))
        finally:
            context.close()
    print(f"{settings['scenario']}: passed, {run.shots} pages checked", flush=True)


if __name__ == "__main__":
    main()
