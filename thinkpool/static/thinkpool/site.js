// Thinkpool's progressive enhancement. The pages work without it; the Content-Security-Policy
// allows no inline script, so every behaviour is bound here from data- attributes.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // <button data-copy="#id">: copies the text of the element it names (a token, a command).
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.querySelector(button.dataset.copy);
      if (!source || !navigator.clipboard) return;
      await navigator.clipboard.writeText(source.textContent.trim());
      button.textContent = "Copied";
    });
  }
  // <form data-confirm="…">: asks before a destructive post (revoking a token).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
