// The playground: a thin client of the public API (see /docs). Plain JS, no build step, no dependencies.
"use strict";

(() => {
  const KEY_STORAGE = "marionet.apiKey";
  const POLL_MS = 1000;
  const TASKS_SHOWN = 10;
  const TERMINAL = new Set(["completed", "failed"]);

  const $ = (id) => document.getElementById(id);

  /** An answer of the API that is not 2xx, carrying the contract's error fields unchanged. */
  class ApiError extends Error {
    constructor(status, code, message, param) {
      super(message);
      this.status = status;
      this.code = code;
      this.param = param;
    }
  }

  // ---- API key -------------------------------------------------------------------------------------------

  const keyInput = $("api-key");

  function storedKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // Storage can be disabled (private windows): the key then lives only in the field.
    }
  }

  function apiKey() {
    return keyInput.value.trim();
  }

  // ---- HTTP ----------------------------------------------------------------------------------------------

  /** Calls the API with the key; returns the parsed JSON or throws ApiError with the API's own words. */
  async function api(path, { method = "GET", json, form } = {}) {
    const headers = {};
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body });
    } catch (cause) {
      throw new ApiError(0, "network_error", `Could not reach the server (${cause.message}).`, null);
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    if (!response.ok) {
      const error = payload && payload.error;
      if (error && error.message) {
        throw new ApiError(response.status, error.code || `http_${response.status}`, error.message, error.param);
      }
      throw new ApiError(
        response.status,
        `http_${response.status}`,
        `The server answered ${response.status} ${response.statusText}.`,
        null,
      );
    }
    return payload;
  }

  // ---- Inputs: upload or URL, with previews --------------------------------------------------------------

  const uploaded = new WeakMap(); // File -> URL from POST /v1/files, so a resubmit does not upload again.

  function sourceMode(kind) {
    return document.querySelector(`input[name="${kind}-from"]:checked`).value;
  }

  function showPreview(kind, src) {
    const preview = $(`${kind}-preview`);
    const empty = $(`${kind}-empty`);
    empty.textContent = `No ${kind} chosen yet.`;
    if (src) {
      preview.src = src;
      preview.hidden = false;
      empty.hidden = true;
    } else {
      preview.removeAttribute("src");
      if (kind === "video") preview.load();
      preview.hidden = true;
      empty.hidden = false;
    }
  }

  function refreshPreview(kind) {
    const previous = $(`${kind}-preview`).dataset.objectUrl;
    if (previous) {
      URL.revokeObjectURL(previous);
      delete $(`${kind}-preview`).dataset.objectUrl;
    }
    if (sourceMode(kind) === "file") {
      const file = $(`${kind}-file`).files[0];
      if (!file) return showPreview(kind, "");
      const objectUrl = URL.createObjectURL(file);
      $(`${kind}-preview`).dataset.objectUrl = objectUrl;
      // A media fragment makes the video preview paint a first frame instead of black.
      return showPreview(kind, kind === "video" ? `${objectUrl}#t=0.1` : objectUrl);
    }
    showPreview(kind, $(`${kind}-url`).value.trim());
  }

  function wireSource(kind) {
    const section = $(`${kind}-source`);
    for (const radio of section.querySelectorAll(`input[name="${kind}-from"]`)) {
      radio.addEventListener("change", () => {
        const fromFile = sourceMode(kind) === "file";
        section.querySelector(".from-file").hidden = !fromFile;
        section.querySelector(".from-url").hidden = fromFile;
        refreshPreview(kind);
      });
    }
    $(`${kind}-file`).addEventListener("change", () => refreshPreview(kind));
    // The server decodes more formats than a browser (MPEG-4 Part 2, for one): say so rather than show nothing.
    $(`${kind}-preview`).addEventListener("error", (event) => {
      if (!event.currentTarget.getAttribute("src")) return;
      event.currentTarget.hidden = true;
      $(`${kind}-empty`).textContent = `This browser cannot preview this ${kind}; the server may still accept it.`;
      $(`${kind}-empty`).hidden = false;
    });
    $(`${kind}-url`).addEventListener("change", () => refreshPreview(kind));
  }

  /** The value for image_url / video_url: an uploaded file's URL, the typed URL, or "" when none is given. */
  async function resolveSource(kind) {
    if (sourceMode(kind) === "url") return $(`${kind}-url`).value.trim();
    const file = $(`${kind}-file`).files[0];
    if (!file) return "";
    if (uploaded.has(file)) return uploaded.get(file);
    setStatus(`Uploading the ${kind} (${formatBytes(file.size)})…`);
    const form = new FormData();
    form.append("file", file, file.name);
    const answer = await api("v1/files", { method: "POST", form });
    uploaded.set(file, answer.url);
    return answer.url;
  }

  // ---- Progress, errors, result ---------------------------------------------------------------------------

  const progressBar = $("progress");

  function setStatus(text) {
    $("status").textContent = text;
  }

  function setProgress(value) {
    progressBar.value = Math.max(0, Math.min(100, value));
  }

  function showError(error) {
    $("error-message").textContent = error.message;
    $("error-code").textContent = error.code || "unknown";
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-message").textContent = "";
    $("error-code").textContent = "";
  }

  function hideResult() {
    const video = $("result-video");
    $("output").hidden = true;
    video.removeAttribute("src");
    video.load();
  }

  function showResult(task) {
    const url = task.results[0];
    const video = $("result-video");
    video.muted = true; // Browsers only autoplay muted media; the controls can unmute.
    video.autoplay = true;
    video.src = url;
    $("download").href = url;
    $("download").setAttribute("download", `${task.id}.mp4`);
    $("result-task").textContent = task.id;
    $("output").hidden = false;
    video.play().catch(() => {});
  }

  function describe(task) {
    const eta = task.task_info && task.task_info.estimated_time;
    const left = Number.isFinite(eta) && eta > 0 ? `, about ${formatSeconds(eta)} left` : "";
    switch (task.status) {
      case "pending":
        return `Task ${task.id} is waiting in the queue${left}.`;
      case "processing":
        return `Generating: ${task.progress}%${left}.`;
      case "completed":
        return `Done: task ${task.id} completed.`;
      default:
        return `Task ${task.id} failed.`;
    }
  }

  /** Shows one task object in the result panel. */
  function render(task) {
    setProgress(task.progress);
    setStatus(describe(task));
    $("cancel").hidden = !(task.task_info && task.task_info.can_cancel) || TERMINAL.has(task.status);
    if (task.status === "completed" && task.results && task.results.length) showResult(task);
    if (task.status === "failed") {
      const error = task.error || {};
      showError({ code: error.code, message: error.message || "The task failed without a message." });
    }
  }

  // ---- Task lifecycle -------------------------------------------------------------------------------------

  let watched = null; // { id, generation }: the task the result panel follows.
  let generation = 0;

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /** Polls GET /v1/tasks/{id} until the task ends or another task takes the panel. */
  async function follow(task) {
    const mine = ++generation;
    watched = { id: task.id, generation: mine };
    clearError();
    hideResult();
    render(task);
    let polls = 0;
    while (!TERMINAL.has(task.status)) {
      await sleep(POLL_MS);
      if (generation !== mine) return;
      try {
        task = await api(`v1/tasks/${encodeURIComponent(task.id)}`);
      } catch (error) {
        if (generation !== mine) return;
        showError(error);
        if (error.status === 0 || error.status >= 500) continue; // Transient: keep polling.
        return;
      }
      if (generation !== mine) return;
      clearError();
      render(task);
      if (++polls % 5 === 0) loadTasks();
    }
    $("cancel").hidden = true;
    loadTasks();
  }

  async function submit(event) {
    event.preventDefault();
    clearError();
    const button = $("submit");
    button.disabled = true;
    $("create").setAttribute("aria-busy", "true");
    generation++; // Stop following any earlier task.
    hideResult();
    setProgress(0);
    try {
      const body = {
        image_url: await resolveSource("image"),
        video_url: await resolveSource("video"),
        mode: document.querySelector('input[name="mode"]:checked').value,
        character_orientation: document.querySelector('input[name="character_orientation"]:checked').value,
        keep_original_sound: document.querySelector('input[name="keep_original_sound"]:checked').value,
        prompt: $("prompt").value,
      };
      // A missing input is left out so that the API itself says what is required.
      if (!body.image_url) delete body.image_url;
      if (!body.video_url) delete body.video_url;
      setStatus("Creating the task…");
      const task = await api("v1/videos/generations", { method: "POST", json: body });
      loadTasks();
      follow(task);
      showResultPanel();
    } catch (error) {
      setStatus("Nothing is running.");
      showError(error);
    } finally {
      button.disabled = false;
      $("create").removeAttribute("aria-busy");
    }
  }

  /** On a phone the result card sits below the form: bring it into view so progress can be seen. */
  function showResultPanel() {
    $("result").scrollIntoView({ block: "nearest" });
  }

  async function cancel() {
    if (!watched) return;
    try {
      await api(`v1/tasks/${encodeURIComponent(watched.id)}/cancel`, { method: "POST" });
      setStatus("Cancelling…");
    } catch (error) {
      showError(error);
    }
  }

  async function open(id) {
    try {
      follow(await api(`v1/tasks/${encodeURIComponent(id)}`));
      showResultPanel();
    } catch (error) {
      showError(error);
    }
  }

  // ---- Recent tasks ---------------------------------------------------------------------------------------

  let tasksLoading = false;
  let tasksStale = false; // A refresh asked for during a load: run it after, or a final state could be missed.

  async function loadTasks() {
    const note = $("tasks-note");
    const table = $("tasks-table");
    if (!apiKey()) {
      table.hidden = true;
      note.textContent = "Paste a key to see your tasks.";
      return;
    }
    if (tasksLoading) {
      tasksStale = true;
      return;
    }
    tasksLoading = true;
    tasksStale = false;
    try {
      const answer = await api(`v1/tasks?limit=${TASKS_SHOWN}`);
      const tasks = (answer.data || []).slice(0, TASKS_SHOWN);
      const body = $("tasks-body");
      body.replaceChildren(...tasks.map(taskRow));
      table.hidden = tasks.length === 0;
      note.textContent = tasks.length ? "" : "No tasks yet for this key.";
    } catch (error) {
      table.hidden = true;
      note.textContent = `Could not list tasks: ${error.message} (${error.code})`;
    } finally {
      tasksLoading = false;
      if (tasksStale) loadTasks();
    }
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function taskRow(task) {
    const row = document.createElement("tr");
    row.dataset.taskId = task.id;
    const idCell = cell(task.id, "task-id");
    const created = new Date(task.created * 1000);
    const createdCell = cell(created.toLocaleString());
    const statusCell = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = `badge ${task.status}`;
    badge.textContent = task.status;
    statusCell.append(badge);
    if (task.status === "failed" && task.error && task.error.code) {
      statusCell.append(" ", Object.assign(document.createElement("code"), { textContent: task.error.code }));
    }
    const progressCell = cell(`${task.progress}%`, "num");
    const actionCell = document.createElement("td");
    const show = document.createElement("button");
    show.type = "button";
    show.className = "ghost small";
    show.textContent = "Show";
    show.setAttribute("aria-label", `Show task ${task.id}`);
    show.addEventListener("click", () => open(task.id));
    actionCell.append(show);
    row.append(idCell, createdCell, statusCell, progressCell, actionCell);
    return row;
  }

  // ---- Formatting ----------------------------------------------------------------------------------------

  function formatBytes(bytes) {
    if (bytes < 1024 * 1024) return `${Math.max(1, Math.round(bytes / 1024))} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  function formatSeconds(seconds) {
    const s = Math.round(seconds);
    return s < 90 ? `${s} s` : `${Math.round(s / 60)} min`;
  }

  // ---- Start ---------------------------------------------------------------------------------------------

  function start() {
    keyInput.value = storedKey();
    keyInput.addEventListener("input", () => storeKey(apiKey()));
    keyInput.addEventListener("change", loadTasks);
    $("api-key-toggle").addEventListener("click", (event) => {
      const show = keyInput.type === "password";
      keyInput.type = show ? "text" : "password";
      event.currentTarget.textContent = show ? "Hide" : "Show";
      event.currentTarget.setAttribute("aria-pressed", String(show));
    });
    wireSource("image");
    wireSource("video");
    const prompt = $("prompt");
    prompt.addEventListener("input", () => {
      $("prompt-count").textContent = `${prompt.value.length} / 2500`;
    });
    $("create").addEventListener("submit", submit);
    $("cancel").addEventListener("click", cancel);
    $("tasks-refresh").addEventListener("click", loadTasks);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadTasks();
    });
    loadTasks();
  }

  start();
})();
