// Copy buttons for pull lines. They stay hidden without JavaScript, where selecting the text works.
(function () {
  "use strict";

  function reveal(root) {
    root.querySelectorAll("[data-copy-target]").forEach(function (button) {
      if (navigator.clipboard) button.hidden = false;
    });
  }

  document.addEventListener("DOMContentLoaded", function () { reveal(document); });
  // Content swapped in by htmx may bring its own buttons.
  document.addEventListener("htmx:afterSwap", function (event) { reveal(event.target); });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copyTarget);
    if (!source) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      // Remembered once, so a second click while "Copied" shows does not make that the label.
      var label = button.dataset.label || (button.dataset.label = button.textContent);
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () {
        button.textContent = label;
        button.classList.remove("copied");
      }, 2000);
    });
  });
})();
