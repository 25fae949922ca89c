import "./base.css";
import "./manage.css";
