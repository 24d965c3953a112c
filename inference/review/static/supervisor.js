// Supervisor page: set a queue's TIP rate (the server checks the role; this only sends the form).
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  for (const form of document.querySelectorAll(".rate-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const rate = Number(form.elements.rate.value) / 100;
      const response = await fetch("/api/tip/rate", {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
        body: JSON.stringify({station: form.dataset.station, rate: rate}),
      });
      const body = await response.json().catch(() => ({}));
      document.getElementById("status").textContent = response.ok ? "Saved." : (body.detail || "Not saved.");
      if (response.ok) window.location.reload();
    });
  }
})();
