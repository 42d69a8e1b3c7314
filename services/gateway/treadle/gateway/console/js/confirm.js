// A confirmation in the page's <dialog> (keyboard: Tab between the buttons, Esc cancels).

import { fill } from "./dom.js";

/** Resolves true when the user confirms. */
export function confirm(title, text, verb = "Confirm") {
  const dialog = document.getElementById("confirm-dialog");
  fill(document.getElementById("confirm-title"), title);
  fill(document.getElementById("confirm-text"), text);
  document.getElementById("confirm-ok").textContent = verb;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}
