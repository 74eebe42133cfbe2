// Bulk selection of tags (select all on the page, shift-click for a range) and the delete
// confirmation dialog. Without JavaScript the checkboxes still submit and "Delete…" links
// open the confirmation page.
(function () {
  "use strict";
  // The partial that loads this file may appear more than once on a page.
  if (window.registryBrowserDelete) return;
  window.registryBrowserDelete = true;

  var lastClicked = null;

  function boxes(formId) {
    var selector = 'input[type="checkbox"][name="tags"][form="' + formId + '"]';
    return Array.prototype.slice.call(document.querySelectorAll(selector));
  }

  function update(formId) {
    var all = boxes(formId);
    var checked = all.filter(function (box) { return box.checked; }).length;
    document.querySelectorAll('[data-select-all="' + formId + '"]').forEach(function (toggle) {
      toggle.hidden = all.length === 0;
      toggle.checked = all.length > 0 && checked === all.length;
      toggle.indeterminate = checked > 0 && checked < all.length;
    });
    var form = document.getElementById(formId);
    if (!form) return;
    var count = form.querySelector("[data-bulk-count]");
    if (count) count.textContent = checked ? checked + " selected" : "";
    var submit = form.querySelector("[data-bulk-submit]");
    if (submit) submit.disabled = checked === 0;
  }

  function updateAll() {
    document.querySelectorAll("form[data-bulk-form]").forEach(function (form) { update(form.id); });
  }

  document.addEventListener("DOMContentLoaded", updateAll);
  // A new page of tags swapped in by htmx starts unselected.
  document.addEventListener("htmx:afterSettle", updateAll);

  document.addEventListener("click", function (event) {
    var box = event.target.closest('input[type="checkbox"][name="tags"][form]');
    if (box) {
      var formId = box.getAttribute("form");
      if (event.shiftKey && lastClicked && lastClicked !== box) {
        var all = boxes(formId);
        var from = all.indexOf(lastClicked);
        var to = all.indexOf(box);
        if (from >= 0 && to >= 0) {
          all.slice(Math.min(from, to), Math.max(from, to) + 1).forEach(function (other) {
            other.checked = box.checked;
          });
        }
      }
      lastClicked = box;
      update(formId);
      return;
    }
    var toggle = event.target.closest("[data-select-all]");
    if (toggle) {
      boxes(toggle.dataset.selectAll).forEach(function (other) { other.checked = toggle.checked; });
      update(toggle.dataset.selectAll);
      return;
    }
    var close = event.target.closest("[data-close-dialog]");
    var dialog = close && close.closest("dialog");
    if (dialog) {
      event.preventDefault();
      dialog.close();
    }
  });

  // A confirmation htmx loaded into a <dialog> opens it as a modal.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.tagName === "DIALOG" && !target.open) target.showModal();
  });
})();
